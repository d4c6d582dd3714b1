"""Open Inference Protocol (KServe V2) vocabulary: datatypes, tensors, requests and codecs."""
