{{/*
Labels helm adds to every object's metadata, on top of the labels deploy/
gives it. Pod templates and selectors get none of them: a selector cannot
change, and the pods stay as deploy/ makes them.
*/}}
{{- define "modelcache.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "modelcache.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The metrics listener of a component: --metrics-addr's value. */}}
{{- define "modelcache.metricsAddr" -}}
{{ .host }}:{{ .port }}
{{- end }}

{{/*
An HTTP probe of a component's metrics listener, by port name; a host is
needed when the listener is on loopback (hostNetwork).
Call with (dict "path" P "port" NAME "metrics" .Values.X.metrics).
*/}}
{{- define "modelcache.httpGet" -}}
httpGet:
  {{- with .metrics.host }}
  host: {{ . }}
  {{- end }}
  path: {{ .path }}
  port: {{ .port }}
{{- end }}
