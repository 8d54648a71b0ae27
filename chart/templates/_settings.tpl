{{/* Settings -> the predictor's flags, and the durations derived from them. */}}

{{/*
A settings value as the predictor's CLI parses it. Helm reads YAML numbers as float64, so whole
numbers are printed as integers (33554432, not 3.3554432e+07).
*/}}
{{- define "image-classifier.flagValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/*
image-classifier.settingsArgs (dict "settings" MAP "fixed" MAP): one "--key=value" per settings key
(sorted, null skipped) after the chart-managed flags in "fixed". Every key is a field of
predictor.config.Settings (values.schema.json allows no other).
*/}}
{{- define "image-classifier.settingsArgs" -}}
{{- $all := merge (dict) .fixed .settings -}}
{{- $args := list -}}
{{- range $key := keys $all | sortAlpha -}}
{{- $v := get $all $key -}}
{{- if not (kindIs "invalid" $v) -}}
{{- $args = append $args (printf "--%s=%s" $key (include "image-classifier.flagValue" $v)) -}}
{{- end -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}

{{/* Seconds, rounded up, of settings.request_timeout_ms. */}}
{{- define "image-classifier.requestTimeoutSeconds" -}}
{{- $ms := int64 .Values.settings.request_timeout_ms -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then the longest of the request deadline and the
server's own drain time, then a margin, so a pod taken off the endpoints finishes what it queued.
*/}}
{{- define "image-classifier.terminationGracePeriodSeconds" -}}
{{- $drain := max (int64 (include "image-classifier.requestTimeoutSeconds" .)) (int64 .Values.settings.grace_period_seconds) -}}
{{- add (int64 .Values.drain.preStopSleepSeconds) $drain (int64 .Values.drain.marginSeconds) -}}
{{- end -}}

{{/* redis_url with the password injected from $(REDIS_PASSWORD) when a password Secret is set. */}}
{{- define "image-classifier.redisUrl" -}}
{{- $u := urlParse .Values.queue.redisUrl -}}
{{- if .Values.queue.passwordSecret.name -}}
{{- printf "%s://:$(REDIS_PASSWORD)@%s%s" $u.scheme $u.host $u.path -}}
{{- else -}}
{{- .Values.queue.redisUrl -}}
{{- end -}}
{{- end -}}
