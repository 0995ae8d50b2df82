{{- define "vllm-autoscaler.labels" -}}
app.kubernetes.io/name: vllm-autoscaler
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "vllm-autoscaler.selector" -}}
app.kubernetes.io/name: vllm-autoscaler
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
