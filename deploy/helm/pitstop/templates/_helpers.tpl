{{- define "pitstop.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pitstop.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pitstop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pitstop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The server pods (not the migration job's): what Services, PDBs and policies select. */}}
{{- define "pitstop.serverLabels" -}}
{{ include "pitstop.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "pitstop.labels" -}}
{{ include "pitstop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "pitstop.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "pitstop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "pitstop.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* The environment every pitstop container of this release gets (server and migration job). */}}
{{- define "pitstop.env" -}}
- name: PITSTOP_HOME
  value: /var/lib/pitstop
- name: PITSTOP_CACHE_DIR
  value: /var/cache/pitstop
- name: PITSTOP_REGISTRY_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.registry.existingSecret }}
      key: {{ .Values.registry.urlKey }}
- name: PITSTOP_ARTIFACTS_URL
  value: {{ .Values.artifacts.url | quote }}
- name: PITSTOP_S3_ADDRESSING_STYLE
  value: {{ .Values.artifacts.addressingStyle | quote }}
- name: PITSTOP_CACHE_MAX_BYTES
  value: {{ .Values.artifacts.cache.maxBytes | int64 | quote }}
{{- with .Values.artifacts.endpoint }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- with .Values.artifacts.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- if .Values.artifacts.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.artifacts.existingSecret }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.artifacts.existingSecret }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* auth.inference as PITSTOP_INFERENCE_AUTH reads it: auto, on or off (an unquoted on/off in a
values file is a YAML boolean: true = on, false = off). */}}
{{- define "pitstop.inferenceAuth" -}}
{{- $mode := .Values.auth.inference -}}
{{- if kindIs "bool" $mode -}}{{ ternary "on" "off" $mode }}{{- else -}}{{ $mode }}{{- end -}}
{{- end -}}

{{/* Where the TLS Secret and the trusted keys ConfigMap are mounted in the server pods. */}}
{{- define "pitstop.tlsDir" -}}/etc/pitstop/tls{{- end -}}
{{- define "pitstop.keysDir" -}}/etc/pitstop/keys{{- end -}}

{{/* The security settings of the server pods (auth, tls, signing values). Every variable here
is owned by a value: pitstop.securityChecks refuses the same name in env. */}}
{{- define "pitstop.securityEnv" -}}
- name: PITSTOP_INFERENCE_AUTH
  value: {{ include "pitstop.inferenceAuth" . | quote }}
{{- if .Values.auth.insecure }}
- name: PITSTOP_INSECURE
  value: "1"
{{- end }}
{{- if .Values.auth.rateLimit }}
- name: PITSTOP_RATE_LIMIT
  value: {{ .Values.auth.rateLimit | quote }}
{{- end }}
{{- if .Values.auth.rateBurst }}
- name: PITSTOP_RATE_BURST
  value: {{ .Values.auth.rateBurst | int64 | quote }}
{{- end }}
{{- if .Values.tls.secretName }}
- name: PITSTOP_TLS_CERT
  value: {{ include "pitstop.tlsDir" . }}/tls.crt
- name: PITSTOP_TLS_KEY
  value: {{ include "pitstop.tlsDir" . }}/tls.key
{{- if .Values.tls.mutual }}
- name: PITSTOP_TLS_CLIENT_CA
  value: {{ include "pitstop.tlsDir" . }}/ca.crt
{{- with .Values.auth.clientScopes }}
- name: PITSTOP_TLS_CLIENT_SCOPES
  value: {{ toJson . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.signing.requireSignature }}
- name: PITSTOP_REQUIRE_SIGNATURE
  value: "1"
{{- end }}
{{- if .Values.signing.trustedKeysConfigMap }}
- name: PITSTOP_TRUSTED_KEYS
  value: {{ list (include "pitstop.keysDir" .) | toJson | quote }}
{{- end }}
{{- end -}}

{{/* Combinations the schema cannot refuse (or that a server would refuse only at start). */}}
{{- define "pitstop.securityChecks" -}}
{{- if and .Values.signing.requireSignature (not .Values.signing.trustedKeysConfigMap) }}
{{- fail "signing.requireSignature needs signing.trustedKeysConfigMap: a ConfigMap of *.pub public keys (without one no version could ever load)" }}
{{- end }}
{{- if and .Values.tls.mutual (not .Values.tls.secretName) }}
{{- fail "tls.mutual needs tls.secretName: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- if and .Values.auth.clientScopes (not (and .Values.tls.secretName .Values.tls.mutual)) }}
{{- fail "auth.clientScopes maps client certificates: it needs tls.mutual (and tls.secretName)" }}
{{- end }}
{{- $tls := or .Values.tls.secretName (hasKey .Values.env "PITSTOP_TLS_CERT") }}
{{- $insecure := or .Values.auth.insecure (hasKey .Values.env "PITSTOP_INSECURE") }}
{{- if and (eq (include "pitstop.inferenceAuth" .) "off") (not $tls) (not $insecure) }}
{{- fail "auth.inference=off without TLS (tls.secretName): the server refuses to start with open, unencrypted inference on 0.0.0.0; set auth.insecure=true to accept that (e.g. behind a service mesh)" }}
{{- end }}
{{- $owners := dict "PITSTOP_INFERENCE_AUTH" "auth.inference" "PITSTOP_INSECURE" "auth.insecure" "PITSTOP_RATE_LIMIT" "auth.rateLimit" "PITSTOP_RATE_BURST" "auth.rateBurst" "PITSTOP_TLS_CERT" "tls.secretName" "PITSTOP_TLS_KEY" "tls.secretName" "PITSTOP_TLS_CLIENT_CA" "tls.mutual" "PITSTOP_TLS_CLIENT_SCOPES" "auth.clientScopes" "PITSTOP_REQUIRE_SIGNATURE" "signing.requireSignature" "PITSTOP_TRUSTED_KEYS" "signing.trustedKeysConfigMap" }}
{{- range $entry := include "pitstop.securityEnv" . | fromYamlArray }}
{{- if hasKey $.Values.env $entry.name }}
{{- fail (printf "env.%s: the chart sets it from %s; remove it from env" $entry.name (get $owners $entry.name)) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A probe's check: HTTP(S) on the http port, or a TCP connect with mutual TLS (the kubelet
has no client certificate to present). Called with (list $ "/v2/health/ready"). */}}
{{- define "pitstop.probeCheck" -}}
{{- $root := index . 0 -}}
{{- if and $root.Values.tls.secretName $root.Values.tls.mutual -}}
tcpSocket:
  port: http
{{- else -}}
httpGet:
  path: {{ index . 1 }}
  port: http
  {{- if $root.Values.tls.secretName }}
  scheme: HTTPS
  {{- end }}
{{- end -}}
{{- end -}}

{{/* The scrape settings ServiceMonitor and PodMonitor endpoints share: bearer token, https. */}}
{{- define "pitstop.scrapeAuth" -}}
{{- with .Values.metrics.tokenSecret }}
authorization:
  type: Bearer
  credentials:
    name: {{ . }}
    key: {{ $.Values.metrics.tokenKey }}
{{- end }}
{{- if .Values.tls.secretName }}
scheme: https
# Encrypted but unverified by default; metrics.tlsConfig can name the CA to verify against
# (ca: {secret: {name, key: ca.crt}}) or, with mutual TLS, a client certificate.
tlsConfig:
  {{- toYaml (.Values.metrics.tlsConfig | default (dict "insecureSkipVerify" true)) | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A monitor that could never scrape: mutual TLS refuses a Prometheus without a client
certificate at the handshake. */}}
{{- define "pitstop.scrapeChecks" -}}
{{- if and .Values.tls.secretName .Values.tls.mutual (not .Values.metrics.tlsConfig) }}
{{- fail "metrics.serviceMonitor/podMonitor with tls.mutual: Prometheus must present a client certificate; set metrics.tlsConfig (cert, keySecret; and auth.clientScopes or metrics.tokenSecret for the read scope)" }}
{{- end }}
{{- end -}}

{{/* Values rendered by an older chart version lack the security values; `helm upgrade
--reuse-values` reuses the old release's values without this chart's new defaults. Say so rather
than fail on a nil field. Called first by every template that reads them. */}}
{{- define "pitstop.requireSecurityValues" -}}
{{- $present := and (kindIs "map" .Values.tls) (kindIs "map" .Values.signing) (kindIs "map" .Values.auth) (kindIs "map" .Values.metrics) -}}
{{- if not (and $present (hasKey .Values.auth "inference") (hasKey .Values.metrics "tokenKey")) }}
{{- fail "auth.inference, tls, signing or metrics.tokenKey is missing: these are values of an older chart version (helm upgrade --reuse-values keeps them without this chart's new defaults). Upgrade with --reset-then-reuse-values (Helm >= 3.14) or pass your values with -f" }}
{{- end }}
{{- end -}}
