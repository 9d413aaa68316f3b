{{- define "waypoint.labels" -}}
gateway.networking.k8s.io/gateway-name: {{ .Values.name }}
gateway.networking.k8s.io/gateway-class-name: mesh-waypoint
app.kubernetes.io/name: waypoint
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
