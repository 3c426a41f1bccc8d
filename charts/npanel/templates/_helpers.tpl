{{/* Names are cut at 63 characters, the DNS label limit. */}}
{{- define "npanel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "npanel.fullname" -}}
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

{{- define "npanel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "npanel.labels" -}}
helm.sh/chart: {{ include "npanel.chart" . }}
app.kubernetes.io/name: {{ include "npanel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: npanel
{{- end }}

{{- define "npanel.serverSelector" -}}
app.kubernetes.io/name: {{ include "npanel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "npanel.etcdSelector" -}}
app.kubernetes.io/name: {{ include "npanel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end }}

{{- define "npanel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "npanel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "npanel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "npanel.etcdName" -}}
{{- printf "%s-etcd" (include "npanel.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "npanel.etcdHeadless" -}}
{{- printf "%s-etcd-headless" (include "npanel.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "npanel.serverHeadless" -}}
{{- printf "%s-headless" (include "npanel.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "npanel.agentService" -}}
{{- printf "%s-agent" (include "npanel.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The domain under which an etcd member's pod name resolves. */}}
{{- define "npanel.etcdDomain" -}}
{{- printf "%s.%s.svc.%s" (include "npanel.etcdHeadless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Comma-separated client URLs npanel dials: each member by name. */}}
{{- define "npanel.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $urls := list }}
{{- $domain := include "npanel.etcdDomain" . }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $urls = append $urls (printf "https://%s-%d.%s:%d" (include "npanel.etcdName" $) $i $domain (int $.Values.etcd.clientPort)) }}
{{- end }}
{{- join "," $urls }}
{{- else }}
{{- join "," .Values.etcd.external.endpoints }}
{{- end }}
{{- end }}

{{- define "npanel.etcdClientSecret" -}}
{{- if .Values.etcd.enabled }}
{{- default (printf "%s-etcd-client-tls" (include "npanel.fullname" .)) .Values.etcd.tls.existingClientSecret }}
{{- else }}
{{- .Values.etcd.external.tlsSecret }}
{{- end }}
{{- end }}

{{- define "npanel.etcdMaxTxnOps" -}}
{{- if .Values.etcd.enabled }}{{ int .Values.etcd.maxTxnOps }}{{ else }}{{ int .Values.etcd.external.maxTxnOps }}{{ end }}
{{- end }}

{{- define "npanel.adminSecret" -}}
{{- default (printf "%s-admin" (include "npanel.fullname" .)) .Values.adminPassword.existingSecret }}
{{- end }}

{{- define "npanel.kekSecret" -}}
{{- default (printf "%s-kek" (include "npanel.fullname" .)) .Values.kek.existingSecret }}
{{- end }}

{{/* The address the replicas advertise to agents (--advertise). */}}
{{- define "npanel.advertise" -}}
{{- if .Values.agentGateway.advertise }}
{{- .Values.agentGateway.advertise }}
{{- else }}
{{- printf "%s.%s.svc.%s:%d" (include "npanel.agentService" .) .Release.Namespace .Values.clusterDomain (int .Values.agentGateway.service.port) }}
{{- end }}
{{- end }}

{{- define "npanel.apiScheme" -}}
{{- if .Values.api.insecureHTTP }}HTTP{{ else }}HTTPS{{ end }}
{{- end }}

{{/* Soft anti-affinity: replicas on different nodes when there are enough. */}}
{{- define "npanel.softAntiAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .selector | nindent 12 }}
{{- end }}
