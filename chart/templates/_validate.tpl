{{/*
Checks combinations the schema cannot express. Collects every message and fails once, so one
`helm template` run lists everything to fix.
*/}}
{{- define "image-classifier.validate" -}}
{{- $v := .Values -}}
{{- $a := $v.autoscaling -}}
{{- $m := list -}}
{{- if gt (int64 $a.minReplicas) (int64 $a.maxReplicas) -}}
{{- $m = append $m (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d): lower minReplicas or raise maxReplicas." (int64 $a.minReplicas) (int64 $a.maxReplicas)) -}}
{{- end -}}
{{- $m = concat $m (include "image-classifier.wakeErrors" . | fromYamlArray) -}}
{{- if and $v.gpu.toleration.enabled (eq $v.gpu.toleration.operator "Equal") (not $v.gpu.toleration.value) -}}
{{- $m = append $m (printf "gpu.toleration.operator is Equal but gpu.toleration.value is empty: set the value of the %s taint your GPU nodes carry, or use operator Exists." $v.gpu.toleration.key) -}}
{{- end -}}
{{- if eq $v.deploymentMode "Standard" -}}
{{- if and (eq $a.standard.autoscaler "keda") (not $a.standard.keda.prometheusAddress) -}}
{{- $m = append $m "autoscaling.standard.autoscaler is keda but autoscaling.standard.keda.prometheusAddress is empty: set the Prometheus URL KEDA queries (e.g. http://prometheus-operated.monitoring:9090)." -}}
{{- end -}}
{{- if and $v.canary.enabled (not (or $v.canary.image.tag $v.canary.image.digest $v.canary.storageUri)) -}}
{{- $m = append $m "canary.enabled in Standard mode needs canary.image.tag, canary.image.digest or canary.storageUri: the canary predictor must differ from the stable one." -}}
{{- end -}}
{{- end -}}
{{- if eq $v.deploymentMode "Knative" -}}
{{- $m = concat $m (include "image-classifier.knativeFeatureErrors" . | fromYamlArray) -}}
{{- end -}}
{{- if $v.canaryAnalysis.enabled -}}
{{- if not $v.canary.enabled -}}
{{- $m = append $m "canaryAnalysis.enabled needs canary.enabled=true: the analysis moves the canary's traffic share." -}}
{{- end -}}
{{- if not $v.canaryAnalysis.prometheusUrl -}}
{{- $m = append $m "canaryAnalysis.enabled needs canaryAnalysis.prometheusUrl (e.g. http://prometheus-operated.monitoring:9090)." -}}
{{- end -}}
{{- if not $v.monitoring.podMonitor.enabled -}}
{{- $m = append $m "canaryAnalysis.enabled needs monitoring.podMonitor.enabled: its revision label tells the canary's series from the stable's." -}}
{{- end -}}
{{- $prev := 0 -}}
{{- $increasing := true -}}
{{- range $step := $v.canaryAnalysis.steps -}}
{{- if le (int64 $step) (int64 $prev) -}}{{- $increasing = false -}}{{- end -}}
{{- $prev = $step -}}
{{- end -}}
{{- if or (not $increasing) (ne (int64 $prev) 100) -}}
{{- $m = append $m (printf "canaryAnalysis.steps must be strictly increasing and end at 100 (the promotion), got %v." $v.canaryAnalysis.steps) -}}
{{- end -}}
{{- $ref := $v.canaryAnalysis.reference -}}
{{- if and $ref.configMap $ref.persistentVolumeClaim -}}
{{- $m = append $m "canaryAnalysis.reference: set configMap or persistentVolumeClaim, not both (the Job mounts one reference set)." -}}
{{- end -}}
{{- if and (or $ref.labelsFile $ref.path) (not (or $ref.configMap $ref.persistentVolumeClaim)) -}}
{{- $m = append $m "canaryAnalysis.reference.labelsFile and .path need reference.configMap or reference.persistentVolumeClaim (where the images are)." -}}
{{- end -}}
{{- end -}}
{{- if gt (int64 $v.settings.default_top_k) (int64 $v.settings.max_top_k) -}}
{{- $m = append $m (printf "settings.default_top_k (%d) exceeds settings.max_top_k (%d)." (int64 $v.settings.default_top_k) (int64 $v.settings.max_top_k)) -}}
{{- end -}}
{{- if $v.queue.enabled -}}
{{- if not $v.queue.redisUrl -}}
{{- $m = append $m "queue.enabled needs queue.redisUrl (e.g. redis://redis-master.redis:6379/0)." -}}
{{- else -}}
{{- $u := urlParse $v.queue.redisUrl -}}
{{- if not (has $u.scheme (list "redis" "rediss")) -}}
{{- $m = append $m (printf "queue.redisUrl must start with redis:// or rediss://, got %q." $v.queue.redisUrl) -}}
{{- end -}}
{{- if $u.userinfo -}}
{{- $m = append $m "queue.redisUrl must not carry credentials: put the password in a Secret and set queue.passwordSecret.name." -}}
{{- end -}}
{{- end -}}
{{- $k := $v.queue.worker.keda -}}
{{- if and $k.enabled (gt (int64 $k.minReplicaCount) (int64 $k.maxReplicaCount)) -}}
{{- $m = append $m (printf "queue.worker.keda.minReplicaCount (%d) is greater than maxReplicaCount (%d)." (int64 $k.minReplicaCount) (int64 $k.maxReplicaCount)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.karpenter.nodePool.enabled (not $v.karpenter.ec2NodeClass.enabled) (not $v.karpenter.nodePool.nodeClassName) -}}
{{- $m = append $m "karpenter.nodePool.enabled needs an EC2NodeClass: set karpenter.ec2NodeClass.enabled=true or karpenter.nodePool.nodeClassName." -}}
{{- end -}}
{{- if $v.karpenter.ec2NodeClass.enabled -}}
{{- if not $v.karpenter.ec2NodeClass.role -}}
{{- $m = append $m "karpenter.ec2NodeClass.enabled needs karpenter.ec2NodeClass.role (the nodes' IAM role)." -}}
{{- end -}}
{{- if not $v.karpenter.ec2NodeClass.discoveryTag -}}
{{- $m = append $m "karpenter.ec2NodeClass.enabled needs karpenter.ec2NodeClass.discoveryTag (the karpenter.sh/discovery tag of subnets and security groups)." -}}
{{- end -}}
{{- end -}}
{{- $m = concat $m (include "image-classifier.frontDoorErrors" . | fromYamlArray) -}}
{{- if $m -}}
{{- fail (printf "\n\nimage-classifier: invalid values:\n  - %s\n" (join "\n  - " $m)) -}}
{{- end -}}
{{- end -}}
