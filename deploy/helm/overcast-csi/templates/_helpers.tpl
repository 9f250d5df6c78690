{{- define "overcast-csi.labels" -}}
app.kubernetes.io/name: overcast-csi
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "overcast-csi.selector" -}}
app.kubernetes.io/name: overcast-csi
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The sidecars' and snapshot-controller's: they reach the driver's socket
     (root's) and the API server, and need nothing of the node. */}}
{{- define "overcast-csi.sidecarSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "overcast-csi.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/* The driver's plugin directory on the node: the CSI socket, which the
     kubelet and the sidecars reach. */}}
{{- define "overcast-csi.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}
