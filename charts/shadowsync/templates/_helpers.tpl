{{/* Chart name, overridable. */}}
{{- define "shadowsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name, with the chart name appended
unless the release name already contains it. Truncated to 63 characters (DNS label).
*/}}
{{- define "shadowsync.fullname" -}}
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

{{- define "shadowsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "shadowsync.labels" -}}
helm.sh/chart: {{ include "shadowsync.chart" . }}
{{ include "shadowsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: shadowsync
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator pods (immutable once installed). */}}
{{- define "shadowsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shadowsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shadowsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shadowsync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespace of the leader-election Lease. */}}
{{- define "shadowsync.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/* The image reference: repository:tag, or repository@digest when a digest is set. */}}
{{- define "shadowsync.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the embedded store's PersistentVolumeClaim. */}}
{{- define "shadowsync.pvcName" -}}
{{- default (printf "%s-data" (include "shadowsync.fullname" .)) .Values.dataPlane.embedded.persistence.existingClaim }}
{{- end }}

{{/*
Combinations the schema cannot express well, checked again here so that a render
with schema validation skipped still refuses them.
*/}}
{{- define "shadowsync.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 requires leaderElection.enabled=true: without it every replica reconciles and they fight over the same shadows" }}
{{- end }}
{{- if and (eq .Values.dataPlane.mode "embedded") (gt (int .Values.replicas) 1) }}
{{- fail "dataPlane.mode=embedded keeps the data plane inside the pod: use replicas=1 (each replica would have its own store)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled requires metrics.service.enabled (the ServiceMonitor selects the metrics Service)" }}
{{- end }}
{{- if and .Values.aws.endpointUrl (eq .Values.dataPlane.mode "embedded") }}
{{- fail "aws.endpointUrl applies to dataPlane.mode=aws only; the embedded data plane has no endpoint" }}
{{- end }}
{{- end }}
