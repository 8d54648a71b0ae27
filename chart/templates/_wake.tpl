{{/*
Scale to zero that wakes. A request that arrives at zero replicas is held while a pod starts (Knative's
activator, or the KEDA HTTP add-on's interceptor): autoscaling.coldStartSeconds in the worst case (a wake
onto a new GPU node), then the request's own deadline. The holders' timeouts are sized from that sum, or
the chart refuses with the numbers. Standard mode without the add-on has nothing that holds or wakes.
*/}}

{{/* Whether the predictor scales to zero: "true" or "". */}}
{{- define "image-classifier.scalesToZero" -}}
{{- if eq (int64 .Values.autoscaling.minReplicas) 0 }}true{{ end -}}
{{- end -}}

{{/* Whether Standard mode is scaled by the KEDA HTTP add-on (an HTTPScaledObject): "true" or "". */}}
{{- define "image-classifier.httpAddon" -}}
{{- if and (eq .Values.deploymentMode "Standard") (eq .Values.autoscaling.standard.autoscaler "httpAddon") }}true{{ end -}}
{{- end -}}

{{/* Seconds a held request needs from arrival: the cold start, the request deadline, the drain margin. */}}
{{- define "image-classifier.wakeRequestSeconds" -}}
{{- add (int64 .Values.autoscaling.coldStartSeconds) (int64 (include "image-classifier.requestTimeoutSeconds" .)) (int64 .Values.drain.marginSeconds) -}}
{{- end -}}

{{/*
Knative revision timeout (the component's `timeout`, Knative's timeoutSeconds): the drain time (it is also
the pod's grace period, in which queue-proxy drains); with minReplicas 0 at least the wake time, because
the activator holds a request within that timeout while the first pod starts.
*/}}
{{- define "image-classifier.revisionTimeoutSeconds" -}}
{{- $t := int64 (include "image-classifier.terminationGracePeriodSeconds" .) -}}
{{- if include "image-classifier.scalesToZero" . -}}
{{- $t = max $t (int64 (include "image-classifier.wakeRequestSeconds" .)) -}}
{{- end -}}
{{- $t -}}
{{- end -}}

{{/* The HTTP add-on interceptor's wait for a response to start: the request deadline plus the margin. */}}
{{- define "image-classifier.interceptorResponseSeconds" -}}
{{- add (int64 (include "image-classifier.requestTimeoutSeconds" .)) (int64 .Values.drain.marginSeconds) -}}
{{- end -}}

{{/* Scale-to-zero and HTTP add-on problems, a YAML list of messages for the validate helper. */}}
{{- define "image-classifier.wakeErrors" -}}
{{- $v := .Values -}}
{{- $a := $v.autoscaling -}}
{{- $m := list -}}
{{- $wake := printf "autoscaling.coldStartSeconds (%d) + settings.request_timeout_ms (%s s) + drain.marginSeconds (%d) = %s s" (int64 $a.coldStartSeconds) (include "image-classifier.requestTimeoutSeconds" .) (int64 $v.drain.marginSeconds) (include "image-classifier.wakeRequestSeconds" .) -}}
{{- if and (include "image-classifier.scalesToZero" .) (eq $v.deploymentMode "Standard") (not (include "image-classifier.httpAddon" .)) -}}
{{- $m = append $m (printf "autoscaling.minReplicas is 0 in Standard mode with autoscaler %q: nothing holds requests or wakes the predictor while no pod runs (HPA cannot scale to zero; the KEDA triggers read the predictor's own pods, which report nothing at zero), so every request after an idle period fails. Scale to zero that wakes: deploymentMode=Knative (the activator holds requests while a pod starts), autoscaling.standard.autoscaler=httpAddon (the KEDA HTTP add-on's interceptor holds them; see chart/ci/standard-keda-http-values.yaml), or queue mode for work that can wait (queue.enabled: jobs wait in Redis while the worker Deployment scales from zero on the stream's lag; the predictor that takes the jobs keeps minReplicas >= 1). Otherwise set autoscaling.minReplicas >= 1." $a.standard.autoscaler) -}}
{{- end -}}
{{- if and (include "image-classifier.scalesToZero" .) (eq $v.deploymentMode "Knative") -}}
{{- $need := int64 (include "image-classifier.wakeRequestSeconds" .) -}}
{{- if gt $need (int64 $a.knative.maxRevisionTimeoutSeconds) -}}
{{- $m = append $m (printf "autoscaling.minReplicas is 0 in Knative mode: the activator holds a request arriving at zero replicas within the revision timeout, which must cover %s, above autoscaling.knative.maxRevisionTimeoutSeconds (%d, Knative's max-revision-timeout-seconds; Knative would reject the revision). Raise max-revision-timeout-seconds in Knative's config-defaults and autoscaling.knative.maxRevisionTimeoutSeconds to at least %d, shorten the cold start (warm nodes, a smaller image, a lower request deadline), or set autoscaling.minReplicas >= 1." $wake (int64 $a.knative.maxRevisionTimeoutSeconds) $need) -}}
{{- end -}}
{{- end -}}
{{- if eq $v.deploymentMode "Knative" -}}
{{- range $key := list "initialScale" "activationScale" -}}
{{- $n := index $a.knative $key -}}
{{- if and (not (kindIs "invalid" $n)) (gt (int64 $n) (int64 $a.maxReplicas)) -}}
{{- $m = append $m (printf "autoscaling.knative.%s (%d) is above autoscaling.maxReplicas (%d): Knative would never run that many pods." $key (int64 $n) (int64 $a.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- $act := $a.knative.activationScale -}}
{{- if and (not (kindIs "invalid" $act)) (lt (int64 $act) (int64 $a.minReplicas)) -}}
{{- $m = append $m (printf "autoscaling.knative.activationScale (%d) is below autoscaling.minReplicas (%d): Knative rejects the revision (min-scale above activation-scale). Raise activationScale or leave it null." (int64 $act) (int64 $a.minReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if include "image-classifier.httpAddon" . -}}
{{- $h := $a.standard.httpAddon -}}
{{- if not $h.hosts -}}
{{- $m = append $m (printf "autoscaling.standard.autoscaler is httpAddon but autoscaling.standard.httpAddon.hosts is empty: list the Host headers the interceptor routes to the predictor (e.g. %s.%s.example.com) and route that host to %s.%s:%d." (include "image-classifier.fullname" .) .Release.Namespace $h.interceptor.service $h.interceptor.namespace (int64 $h.interceptor.port)) -}}
{{- end -}}
{{- if $v.canary.enabled -}}
{{- $m = append $m "canary.enabled with autoscaling.standard.autoscaler=httpAddon: the interceptor routes every request to the stable predictor's Service, so the canary predictor would get none. Use deploymentMode=Knative for a canary that scales to zero, or another Standard-mode autoscaler." -}}
{{- end -}}
{{- if and $v.networkPolicy.enabled (not (has $h.interceptor.namespace $v.networkPolicy.ingressNamespaces)) -}}
{{- $m = append $m (printf "networkPolicy.enabled with autoscaling.standard.autoscaler=httpAddon: the interceptor in namespace %s proxies every request, so add it to networkPolicy.ingressNamespaces (now %v)." $h.interceptor.namespace $v.networkPolicy.ingressNamespaces) -}}
{{- end -}}
{{- end -}}
{{- toYaml $m -}}
{{- end -}}
