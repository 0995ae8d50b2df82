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

{{- /*
The engine's arguments that the controller (`run`) and the KEDA scaler (`keda-scaler`)
share: Prometheus (URL, credentials, CA, matchers), the shutdown timeout and the
/metrics endpoint's limits, all from .Values.autoscaler. Include with the root context,
then `| trim | nindent N`.
*/}}
{{- define "vllm-autoscaler.engineArgs" -}}
{{- with .Values.autoscaler }}
{{- if .prometheusUrl }}
- --prometheus-url={{ .prometheusUrl }}
{{- if .prometheusAuth.tokenSecret.secretName }}
- --prometheus-token-file=/etc/vllm-autoscaler/prometheus-token/{{ .prometheusAuth.tokenSecret.key }}
{{- end }}
{{- if .prometheusAuth.basicAuthSecret.secretName }}
- --prometheus-basic-auth-file=/etc/vllm-autoscaler/prometheus-basic-auth/{{ .prometheusAuth.basicAuthSecret.key }}
{{- end }}
{{- if .prometheusAuth.caSecret.secretName }}
- --prometheus-ca-file=/etc/vllm-autoscaler/prometheus-ca/{{ .prometheusAuth.caSecret.key }}
{{- end }}
{{- if .prometheusNamespace }}
- --prometheus-namespace={{ .prometheusNamespace }}
{{- end }}
{{- if .prometheusModel }}
- --prometheus-model={{ .prometheusModel }}
{{- end }}
{{- range $name, $value := .prometheusMatchers }}
- --prometheus-matcher={{ $name }}={{ $value }}
{{- end }}
{{- end }}
- --shutdown-timeout={{ .shutdownTimeout }}
- --http-header-timeout={{ .http.headerTimeout }}
- --http-max-connections={{ .http.maxConnections }}
{{- end }}
{{- end -}}

{{- /*
The mounts (container volumeMounts items) and volumes (pod volumes items) of the
Prometheus credentials' Secrets that engineArgs points at; empty when none is set.
*/}}
{{- define "vllm-autoscaler.prometheusVolumeMounts" -}}
{{- with .Values.autoscaler.prometheusAuth }}
{{- if .tokenSecret.secretName }}
- {name: prometheus-token, mountPath: /etc/vllm-autoscaler/prometheus-token, readOnly: true}
{{- end }}
{{- if .basicAuthSecret.secretName }}
- {name: prometheus-basic-auth, mountPath: /etc/vllm-autoscaler/prometheus-basic-auth, readOnly: true}
{{- end }}
{{- if .caSecret.secretName }}
- {name: prometheus-ca, mountPath: /etc/vllm-autoscaler/prometheus-ca, readOnly: true}
{{- end }}
{{- end }}
{{- end -}}

{{- define "vllm-autoscaler.prometheusVolumes" -}}
{{- with .Values.autoscaler.prometheusAuth }}
{{- if .tokenSecret.secretName }}
- name: prometheus-token
  secret: {secretName: {{ .tokenSecret.secretName }}}
{{- end }}
{{- if .basicAuthSecret.secretName }}
- name: prometheus-basic-auth
  secret: {secretName: {{ .basicAuthSecret.secretName }}}
{{- end }}
{{- if .caSecret.secretName }}
- name: prometheus-ca
  secret: {secretName: {{ .caSecret.secretName }}}
{{- end }}
{{- end }}
{{- end -}}
