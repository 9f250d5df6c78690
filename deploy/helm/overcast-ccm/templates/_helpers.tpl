{{- define "overcast-ccm.labels" -}}
app.kubernetes.io/name: overcast-ccm
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "overcast-ccm.selector" -}}
app.kubernetes.io/name: overcast-ccm
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
