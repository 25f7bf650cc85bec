{{/* RBAC rules on the watched resources, shared by the ClusterRole and the Role. */}}
{{- define "shadowsync.rules" -}}
# Watch the custom resources; patch to add and remove the finalizer (and, for the
# children of a set, to give them another template revision).
- apiGroups: ["iot.shadowsync.dev"]
  resources: ["thingshadows", "retainedmessages"]
  verbs: ["get", "list", "watch", "patch"]
# ThingShadowSet: one child ThingShadow per selected thing, created when a thing joins
# the set and deleted when it leaves. delete is also what the
# OwnerReferencesPermissionEnforcement admission plugin asks for before an update may
# change a child's ownerReferences.
- apiGroups: ["iot.shadowsync.dev"]
  resources: ["thingshadows"]
  verbs: ["create", "delete"]
# Watch the sets. No patch: a set has no finalizer (its children go with it, by the
# garbage collector, and each cleans up per its deletionPolicy).
- apiGroups: ["iot.shadowsync.dev"]
  resources: ["thingshadowsets"]
  verbs: ["list", "watch"]
# Write status by server-side apply (conditions, the mirrored shadow, conflicts; a
# set's rollout phase, step and counts).
- apiGroups: ["iot.shadowsync.dev"]
  resources: ["thingshadows/status", "retainedmessages/status", "thingshadowsets/status"]
  verbs: ["patch"]
# Never sent as a request: each child's ownerReference to its set has
# blockOwnerDeletion: true, and the OwnerReferencesPermissionEnforcement admission
# plugin (on in many production clusters) admits that only from whoever may update the
# set's finalizers.
- apiGroups: ["iot.shadowsync.dev"]
  resources: ["thingshadowsets/finalizers"]
  verbs: ["update"]
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
