{{/*
image-classifier.containerConcurrency: Knative's hard limit of requests in one pod at a time, which
queue-proxy enforces (the excess waits in queue-proxy, up to 10 x the limit, and the activator routes to
pods with room) so that the pod's own queue does not have to refuse it with 503.
`auto` = settings.max_queue_images: the pod's queue holds that many one-image requests, so with one image
per request the pod itself never sheds; capped at 1000, Knative's default container-concurrency-max-limit.
A concurrency target above the limit could never be reached (queue-proxy lets no more in): refused.
*/}}
{{- define "image-classifier.containerConcurrency" -}}
{{- $k := .Values.autoscaling.knative -}}
{{- $cc := 0 -}}
{{- if eq (toString $k.containerConcurrency) "auto" -}}
{{- $cc = min 1000 (int64 .Values.settings.max_queue_images) -}}
{{- else -}}
{{- $cc = int64 $k.containerConcurrency -}}
{{- end -}}
{{- if and (gt (int64 $cc) 0) (eq $k.metric "concurrency") (gt (int64 $k.target) (int64 $cc)) -}}
{{- fail (printf "autoscaling.knative.target (%d) exceeds containerConcurrency (%d): queue-proxy lets at most %d requests into a pod, so the autoscaler would never see %d; lower the target or raise autoscaling.knative.containerConcurrency (auto = settings.max_queue_images)" (int64 $k.target) (int64 $cc) (int64 $cc) (int64 $k.target)) -}}
{{- end -}}
{{- $cc -}}
{{- end -}}

{{/*
image-classifier.metricsPort: where Prometheus scrapes the predictor: its metrics-only port
(monitoring.metricsPort), or 8080 when that is 0 (then /metrics is on the inference port).
*/}}
{{- define "image-classifier.metricsPort" -}}
{{- if .Values.monitoring.metricsPort -}}{{ int64 .Values.monitoring.metricsPort }}{{- else -}}8080{{- end -}}
{{- end -}}

{{/* The admin token file inside the predictor container (the admin.tokenSecret mount). */}}
{{- define "image-classifier.adminTokenDir" -}}/var/run/secrets/image-classifier/admin{{- end -}}

{{/* image-classifier.frontDoorErrors: a YAML list of messages for the validate helper. */}}
{{- define "image-classifier.frontDoorErrors" -}}
{{- $v := .Values -}}
{{- $m := list -}}
{{- if and $v.settings.enable_model_repository_routes (not $v.admin.tokenSecret.name) -}}
{{- $m = append $m "settings.enable_model_repository_routes needs admin.tokenSecret.name: the repository routes (load/unload) are served only to callers with the bearer token that Secret holds." -}}
{{- end -}}
{{- /* KServe's HTTP and gRPC ports; Knative queue-proxy's 8012 http1, 8013 h2c, 8022 admin, 8112, 9090
autoscaler metrics, 9091 user metrics. */ -}}
{{- $reserved := list 8080 8081 8012 8013 8022 8112 9090 9091 -}}
{{- if and $v.monitoring.metricsPort (has (int $v.monitoring.metricsPort) $reserved) -}}
{{- $m = append $m (printf "monitoring.metricsPort (%d) is a port the predictor pod already uses (%s): pick another, e.g. 9095." (int $v.monitoring.metricsPort) (join ", " $reserved)) -}}
{{- end -}}
{{- if and $v.istio.authorizationPolicy.enabled (not (and $v.istio.authorizationPolicy.jwt.issuer $v.istio.authorizationPolicy.jwt.jwksUri)) -}}
{{- $m = append $m "istio.authorizationPolicy.enabled needs istio.authorizationPolicy.jwt.issuer and jwksUri: requests are allowed only with a JWT that issuer signed." -}}
{{- end -}}
{{- toYaml $m -}}
{{- end -}}
