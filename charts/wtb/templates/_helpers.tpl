{{/* The chart's name, or nameOverride. */}}
{{- define "wtb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name of the operator's objects (63 characters at most). */}}
{{- define "wtb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wtb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wtb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "wtb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "wtb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wtb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wtb.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook Service's name; the API server calls https://<it>.<namespace>.svc:<port>. */}}
{{- define "wtb.webhookServiceName" -}}
{{- printf "%s-webhook" (include "wtb.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the admission webhook configurations Kopf manages (settings.admission.managed
in the operator); the ClusterRole lets the operator patch these objects only.
*/}}
{{- define "wtb.webhookConfigurationName" -}}
validate.wtb.dev
{{- end }}
