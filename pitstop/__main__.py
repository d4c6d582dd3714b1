from pitstop.cli import main

# Guarded: a process started with multiprocessing's "spawn" (the JSON codec worker) imports
# this module again and must not run the command line.
if __name__ == "__main__":
    main()
