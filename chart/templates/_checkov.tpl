{{/*
checkov.io/skip<N> annotations: the checkov Kubernetes checks this chart fails on purpose, each with its
reason, and each only while the values that make it fail are in force (set a digest, pullPolicy Always or
networkPolicy.enabled and the skip disappears, so checkov checks it again). KServe copies an
InferenceService's annotations onto the workloads it creates, where checkov reads them.
image-classifier.checkovSkips (dict "root" $ "images" LIST-OF-IMAGE-REFS "secretEnv" BOOL "noPodSecurityContext" BOOL "apiToken" BOOL)
*/}}
{{- define "image-classifier.checkovSkips" -}}
{{- $v := .root.Values -}}
{{- $skips := list -}}
{{- if ne $v.image.pullPolicy "Always" -}}
{{- $skips = append $skips (printf "CKV_K8S_15=image.pullPolicy is %s: tags are immutable releases (or digests), and Always would add a registry round trip to every start of a multi-GB image" $v.image.pullPolicy) -}}
{{- end -}}
{{- $byTag := list -}}
{{- range .images -}}
{{- if not (contains "@sha256:" .) }}{{ $byTag = append $byTag . }}{{ end -}}
{{- end -}}
{{- if $byTag -}}
{{- $skips = append $skips "CKV_K8S_43=images are pinned by tag: set image.digest (canary.image.digest, a @sha256 queue.worker.storageInitializerImage) to pin them by digest" -}}
{{- end -}}
{{- if .secretEnv -}}
{{- $skips = append $skips "CKV_K8S_35=the Redis password reaches --redis_url through $(REDIS_PASSWORD) expansion in the args, which only an env var provides; it is read from the Secret, never written into the manifest" -}}
{{- end -}}
{{- if .apiToken -}}
{{- $skips = append $skips "CKV_K8S_38=the canary analysis reads and patches this InferenceService through the API server with its ServiceAccount token; its Role allows only get and patch of that one object" -}}
{{- end -}}
{{- if .noPodSecurityContext -}}
{{- $skips = append $skips "CKV_K8S_29=a stock Knative refuses a pod-level securityContext unless config-features enables kubernetes.podspec-securitycontext (declare it in knative.features and the pod gets one); the container's own securityContext runs as non-root with a read-only root filesystem, no capabilities and seccomp RuntimeDefault" -}}
{{- end -}}
{{- if not $v.networkPolicy.enabled -}}
{{- $skips = append $skips "CKV2_K8S_6=networkPolicy.enabled is off by default because the allowed peers (gateway, Knative and monitoring namespaces) depend on the cluster; turn on networkPolicy.enabled to check it" -}}
{{- end -}}
{{- $lines := list -}}
{{- range $i, $s := $skips -}}
{{- $lines = append $lines (printf "checkov.io/skip%d: %s" (add1 $i) (quote $s)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}
