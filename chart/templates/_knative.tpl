{{/* Knative feature gates: which pod fields a stock Knative refuses, and what enables them. */}}

{{/*
Whether a pod may carry a field behind a Knative feature flag: the worker (a Deployment) and Standard
mode always; a Knative-mode predictor only when knative.features lists the flag (a stock Knative
refuses the field otherwise).
image-classifier.podFeature (dict "root" $ "pod" predictor|worker "flag" FLAG) -> "true" or ""
*/}}
{{- define "image-classifier.podFeature" -}}
{{- $v := .root.Values -}}
{{- if or (ne .pod "predictor") (ne $v.deploymentMode "Knative") (has .flag $v.knative.features) -}}true{{- end -}}
{{- end -}}

{{/* The config-features merge patch enabling a list of Knative flags: {"data":{"FLAG":"enabled",...}}. */}}
{{- define "image-classifier.configFeaturesPatch" -}}
{{- $data := dict -}}
{{- range . }}{{ $_ := set $data . "enabled" }}{{ end -}}
{{- dict "data" $data | toJson -}}
{{- end -}}

{{/*
Knative mode: values that put a field behind a Knative feature flag into the predictor pod while
knative.features does not list the flag. A YAML list of messages, each with the command that enables it.
*/}}
{{- define "image-classifier.knativeFeatureErrors" -}}
{{- $v := .Values -}}
{{- $needs := list -}}
{{- if $v.spot.enabled -}}
{{- $needs = append $needs (list "spot.enabled" "a preferred node affinity and tolerations" (list "kubernetes.podspec-affinity" "kubernetes.podspec-tolerations")) -}}
{{- end -}}
{{- if $v.tolerations -}}
{{- $needs = append $needs (list "tolerations" "tolerations" (list "kubernetes.podspec-tolerations")) -}}
{{- end -}}
{{- if and $v.karpenter.nodePool.enabled $v.karpenter.nodePool.gpuTaint $v.gpu.enabled $v.gpu.toleration.enabled -}}
{{- $needs = append $needs (list "karpenter.nodePool.gpuTaint" (printf "the NodePool taints its nodes %s, so the predictor needs the toleration" $v.gpu.toleration.key) (list "kubernetes.podspec-tolerations")) -}}
{{- end -}}
{{- if $v.nodeSelector -}}
{{- $needs = append $needs (list "nodeSelector" "a node selector" (list "kubernetes.podspec-nodeselector")) -}}
{{- end -}}
{{- if $v.sharedCache.existingClaim -}}
{{- $needs = append $needs (list "sharedCache.existingClaim" "a writable PersistentVolumeClaim volume" (list "kubernetes.podspec-persistent-volume-claim" "kubernetes.podspec-persistent-volume-write")) -}}
{{- end -}}
{{- if $v.priorityClassName -}}
{{- $needs = append $needs (list "priorityClassName" "a priority class" (list "kubernetes.podspec-priorityclassname")) -}}
{{- end -}}
{{- if omit (default (dict) $v.podSecurityContext) "seccompProfile" -}}
{{- $needs = append $needs (list "podSecurityContext" "pod-level security settings other than seccompProfile" (list "kubernetes.podspec-securitycontext")) -}}
{{- end -}}
{{- $m := list -}}
{{- range $needs -}}
{{- $missing := list -}}
{{- range (index . 2) }}{{ if not (has . $v.knative.features) }}{{ $missing = append $missing . }}{{ end }}{{ end -}}
{{- if $missing -}}
{{- $m = append $m (printf "%s (%s) in Knative mode needs Knative's %s (off in a stock Knative). Turn on in config-features: kubectl -n knative-serving patch configmap config-features --type merge -p '%s'; then add to knative.features. Or unset %s." (index . 0) (index . 1) (join " and " $missing) (include "image-classifier.configFeaturesPatch" $missing) (index . 0)) -}}
{{- end -}}
{{- end -}}
{{- toYaml $m -}}
{{- end -}}
