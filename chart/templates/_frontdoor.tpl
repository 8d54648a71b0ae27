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
