{{/* Names and labels. */}}
{{- define "warden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "warden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains (include "warden.name" .) .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "warden.name" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "warden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "warden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" . "component" "control-plane"). */}}
{{- define "warden.selector" -}}
app.kubernetes.io/name: {{ include "warden.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "warden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "warden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "warden.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The control plane's secret store: file, or vault when vault.enabled, unless set. */}}
{{- define "warden.secretsStore" -}}
{{- if .Values.controlPlane.secretsStore -}}
{{- .Values.controlPlane.secretsStore -}}
{{- else if .Values.vault.enabled -}}
vault
{{- else -}}
file
{{- end -}}
{{- end -}}

{{- define "warden.masterKeyFile" -}}
{{- if .Values.masterKey.existingSecret -}}
/run/secrets/warden/master-key
{{- else -}}
{{- .Values.masterKey.file -}}
{{- end -}}
{{- end -}}

{{/* The nodes' --cp-addr: the headless Service, one DNS record per ready replica. */}}
{{- define "warden.cpAddr" -}}
{{- printf "%s://%s-cp-headless.%s.svc:%d" (ternary "https" "http" .Values.tls.enabled) (include "warden.fullname" .) .Release.Namespace (int .Values.controlPlane.grpcPort) -}}
{{- end -}}

{{/*
Refuses values that would deploy something broken; called from every workload template.
*/}}
{{- define "warden.validate" -}}
{{- $cp := .Values.controlPlane -}}
{{- if and (gt (int $cp.replicas) 1) (not .Values.database.existingSecret) -}}
{{- fail "controlPlane.replicas > 1 needs PostgreSQL: set database.existingSecret (a Secret holding WARDEN_DATABASE_URL) or controlPlane.replicas=1 (SQLite on controlPlane.persistence.existingClaim)" -}}
{{- end -}}
{{- if and (gt (int $cp.replicas) 1) (eq (include "warden.secretsStore" .) "file") -}}
{{- fail "controlPlane.replicas > 1 needs a shared secret store: vault.enabled=true (or controlPlane.secretsStore aws|azure with its [[secrets.backends]] in controlPlane.extraConfig); the file store is one replica's" -}}
{{- end -}}
{{- if and (not .Values.database.existingSecret) (not $cp.persistence.existingClaim) -}}
{{- fail "without database.existingSecret the control plane keeps its state in SQLite under data_dir: set controlPlane.persistence.existingClaim (a PersistentVolumeClaim), or an emptyDir would lose every credential and the audit chain at each restart" -}}
{{- end -}}
{{- if and (not .Values.masterKey.existingSecret) (not .Values.masterKey.file) -}}
{{- fail "masterKey.existingSecret (a Secret with the 32-byte base64 master key) or masterKey.file is required" -}}
{{- end -}}
{{- if and (not .Values.node.token.existingSecret) (not .Values.node.token.file) -}}
{{- fail "node.token.existingSecret (a Secret with the wn_… node credential) or node.token.file is required" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.controlPlaneSecret) -}}
{{- fail "tls.enabled needs tls.controlPlaneSecret (tls.crt, tls.key, ca.crt)" -}}
{{- end -}}
{{- if and .Values.vault.enabled (not .Values.vault.address) -}}
{{- fail "vault.enabled needs vault.address" -}}
{{- end -}}
{{- if and .Values.vault.enabled (not .Values.vault.auth.existingSecret) -}}
{{- fail "vault.enabled needs vault.auth.existingSecret (the AppRole secret id or the token)" -}}
{{- end -}}
{{- $n := .Values.node -}}
{{- $drain := add (int $n.preStopSleepSeconds) (int $n.upstreamDeadlineSeconds) 10 -}}
{{- if le (int $n.terminationGracePeriodSeconds) (int $drain) -}}
{{- fail (printf "node.terminationGracePeriodSeconds (%d) must exceed the node's drain: preStopSleepSeconds + upstreamDeadlineSeconds + 10 = %d" (int $n.terminationGracePeriodSeconds) (int $drain)) -}}
{{- end -}}
{{- if gt (int $n.autoscaling.minReplicas) (int $n.autoscaling.maxReplicas) -}}
{{- fail "node.autoscaling.minReplicas must not exceed node.autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}

{{/* The control plane's environment: values from existing Secrets. */}}
{{- define "warden.cpEnv" -}}
{{- $cp := .Values.controlPlane -}}
{{- if .Values.database.existingSecret }}
- name: WARDEN_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.key }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: WARDEN_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.key }}
{{- end }}
{{- if .Values.vault.enabled }}
- name: {{ ternary "VAULT_SECRET_ID" "VAULT_TOKEN" (eq .Values.vault.auth.type "approle") }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.vault.auth.existingSecret }}
      key: {{ .Values.vault.auth.key }}
{{- end }}
{{- include "warden.otlpHeadersEnv" . }}
{{- with $cp.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* WARDEN_OTLP_HEADERS from tracing.headersSecret (the collector's credentials). */}}
{{- define "warden.otlpHeadersEnv" -}}
{{- if and .Values.tracing.otlpEndpoint .Values.tracing.headersSecret }}
- name: WARDEN_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.tracing.headersSecret }}
      key: {{ .Values.tracing.headersKey }}
{{- end }}
{{- end -}}

{{/* The OTLP collector's port, from tracing.otlpEndpoint (4317 when it names none). */}}
{{- define "warden.otlpPort" -}}
{{- $hostport := regexReplaceAll "^https?://([^/]+).*$" .Values.tracing.otlpEndpoint "${1}" -}}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" -}}
{{- default "4317" $port -}}
{{- end -}}
