{{/* RBAC rules on the watched resources, shared by the ClusterRole and the Role. */}}
{{- define "shadowsync.rules" -}}
# Watch the custom resources; patch to add and remove the finalizer.
- apiGroups: ["iot.shadowsync.dev"]
  resources: ["thingshadows", "retainedmessages"]
  verbs: ["get", "list", "watch", "patch"]
# Write status (conditions, the mirrored shadow, conflicts).
- apiGroups: ["iot.shadowsync.dev"]
  resources: ["thingshadows/status", "retainedmessages/status"]
  verbs: ["patch"]
# Events on transitions (events.k8s.io/v1; patch updates a repeated event's series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.readSecrets }}
# RetainedMessage payload.secretKeyRef: re-read by name on every refresh (no list/watch).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.readConfigMaps }}
# RetainedMessage payload.configMapKeyRef: re-read by name on every refresh (no list/watch).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
{{- end }}
{{- end }}
