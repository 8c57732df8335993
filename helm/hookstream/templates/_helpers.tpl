{{- define "hookstream.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hookstream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hookstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "hookstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector of one role's pods; call with (dict "root" $ "role" "api"). */}}
{{- define "hookstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{/* The roles this release runs, by mode: "combined" runs `serve`, "split" api + worker. */}}
{{- define "hookstream.roles" -}}
{{- if eq .Values.mode "split" -}}
api worker
{{- else -}}
combined
{{- end -}}
{{- end -}}

{{/* The hookstream subcommand of a role. */}}
{{- define "hookstream.command" -}}
{{- if eq . "combined" -}}serve{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{- define "hookstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "hookstream.secretName" -}}
{{- default (printf "%s-nats" (include "hookstream.fullname" .)) .Values.nats.existingSecret -}}
{{- end -}}

{{- define "hookstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hookstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* delivery.shutdown_grace_ms in whole seconds, rounded up, plus terminationExtraSeconds. */}}
{{- define "hookstream.terminationGracePeriodSeconds" -}}
{{- $graceMs := int (dig "delivery" "shutdown_grace_ms" 20000 .Values.config) -}}
{{- add (div (add $graceMs 999) 1000) .Values.terminationExtraSeconds -}}
{{- end -}}

{{/*
The TOML configuration: .Values.config with the chart's own keys laid over it. Values
are written as JSON, which is valid TOML for strings, numbers, booleans and arrays of them.
*/}}
{{- define "hookstream.configToml" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $nats := dict "url" .Values.nats.url "user" .Values.nats.user "replicas" .Values.nats.replicas -}}
{{- $_ := set $cfg "nats" (merge $nats (get $cfg "nats" | default dict)) -}}
{{- $api := dict "listen" "0.0.0.0:8080" -}}
{{- $_ := set $cfg "api" (merge $api (get $cfg "api" | default dict)) -}}
{{- range $key := keys $cfg | sortAlpha }}
{{- $value := get $cfg $key }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- range $section := keys $cfg | sortAlpha }}
{{- $table := get $cfg $section }}
{{- if kindIs "map" $table }}

[{{ $section }}]
{{- range $key := keys $table | sortAlpha }}
{{ $key }} = {{ toJson (get $table $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Secret holding the admin API key: yours (auth.existingSecret) or the chart's. */}}
{{- define "hookstream.authSecretName" -}}
{{- default (printf "%s-admin-key" (include "hookstream.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
