{{- define "kubetrail.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kubetrail.labels" -}}
app.kubernetes.io/name: kubetrail
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubetrail.selector" -}}
app.kubernetes.io/name: kubetrail
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubetrail.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}{{ .Values.tls.existingSecret }}{{- else -}}{{ include "kubetrail.fullname" . }}-tls{{- end -}}
{{- end -}}

{{- define "kubetrail.webhookHost" -}}
{{ include "kubetrail.fullname" . }}-webhook.{{ .Release.Namespace }}.svc
{{- end -}}
