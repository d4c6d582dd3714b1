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
