{{- define "overcast-ccm.labels" -}}
app.kubernetes.io/name: overcast-ccm
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "overcast-ccm.selector" -}}
app.kubernetes.io/name: overcast-ccm
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "overcast-ccm.serviceAccountName" -}}
{{- default .Release.Name .Values.serviceAccount.name -}}
{{- end -}}

{{/* The provider, refusing to render without one: a default provider
     would act on a real cluster (the fake one deletes its Nodes). */}}
{{- define "overcast-ccm.cloudProvider" -}}
{{- $provider := required "cloudProvider is required: set --set cloudProvider=local (or aws); see the chart's README" .Values.cloudProvider -}}
{{- $provider -}}
{{- end -}}

{{/* The container's securityContext: the user's, or what the provider needs. */}}
{{- define "overcast-ccm.securityContext" -}}
{{- if .Values.securityContext -}}
{{- toYaml .Values.securityContext -}}
{{- else if eq .Values.cloudProvider "local" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
# `ip addr add` and ARP/NDP announcements need NET_ADMIN and NET_RAW; VIP
# ports below 1024 need NET_BIND_SERVICE. Root, because a non-root
# container gets no effective capabilities from `add`.
runAsUser: 0
capabilities:
  drop: [ALL]
  add: [NET_ADMIN, NET_RAW, NET_BIND_SERVICE]
{{- else -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
capabilities:
  drop: [ALL]
{{- end -}}
{{- end -}}

{{/* Replicas on the host network must not share a node: the secure port
     and the VIP ports would clash. */}}
{{- define "overcast-ccm.affinity" -}}
{{- if .Values.affinity -}}
{{- toYaml .Values.affinity -}}
{{- else if and .Values.hostNetwork (eq .Values.kind "Deployment") -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels: {{- include "overcast-ccm.selector" . | nindent 10 }}
{{- end -}}
{{- end -}}

{{/*
A leader-election timing: the value set, else the provider's default. For
local the lease is the VIP failover timer (docs/local-provider.md).
*/}}
{{- define "overcast-ccm.leaderElection" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $set := index $root.Values.leaderElection $key -}}
{{- if $set -}}
{{- $set -}}
{{- else if eq (include "overcast-ccm.cloudProvider" $root) "local" -}}
{{- get (dict "leaseDuration" "1s" "renewDeadline" "800ms" "retryPeriod" "200ms") $key -}}
{{- else -}}
{{- get (dict "leaseDuration" "15s" "renewDeadline" "10s" "retryPeriod" "2s") $key -}}
{{- end -}}
{{- end -}}
