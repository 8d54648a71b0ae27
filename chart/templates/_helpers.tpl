{{/* ---------------------------------------------------------------- names and labels */}}

{{/* Chart name, overridable. */}}
{{- define "image-classifier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's objects: the release name (`helm install classifier ./chart` ->
InferenceService `classifier`, the name `kubectl patch inferenceservice classifier` expects), or
fullnameOverride. KServe appends "-predictor-..." to it for pods and services, so it is kept to
45 characters to leave room in the 63-character DNS label.
*/}}
{{- define "image-classifier.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{- define "image-classifier.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable across upgrades, never the version. */}}
{{- define "image-classifier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "image-classifier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "image-classifier.labels" -}}
helm.sh/chart: {{ include "image-classifier.chart" . }}
{{ include "image-classifier.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: image-classifier
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels identifying predictor pods (stable and canary); PodMonitor, PDB and spread select on them. */}}
{{- define "image-classifier.predictorSelectorLabels" -}}
{{ include "image-classifier.selectorLabels" . }}
app.kubernetes.io/component: predictor
{{- end -}}

{{- define "image-classifier.workerSelectorLabels" -}}
{{ include "image-classifier.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "image-classifier.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "image-classifier.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "image-classifier.workerName" -}}
{{- printf "%s-worker" (include "image-classifier.fullname" .) -}}
{{- end -}}

{{/* The canary analysis Job's ServiceAccount, Role and RoleBinding (the Job adds the release revision). */}}
{{- define "image-classifier.canaryAnalysisName" -}}
{{- printf "%s-canary" (include "image-classifier.fullname" .) -}}
{{- end -}}

{{/* Cluster-scoped names must differ between namespaces. */}}
{{- define "image-classifier.canaryAnalysisClusterName" -}}
{{- printf "%s-%s-canary-crd" .Release.Namespace (include "image-classifier.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "image-classifier.nodePoolName" -}}
{{- default (printf "%s-gpu" (include "image-classifier.fullname" .)) .Values.karpenter.nodePool.name -}}
{{- end -}}

{{- define "image-classifier.ec2NodeClassName" -}}
{{- default (printf "%s-gpu" (include "image-classifier.fullname" .)) .Values.karpenter.ec2NodeClass.name -}}
{{- end -}}

{{/* ---------------------------------------------------------------- image */}}

{{/* image-classifier.imageRef (dict "root" $ "tag" TAG "digest" DIGEST): repo@digest, else repo:tag. */}}
{{- define "image-classifier.imageRef" -}}
{{- $repo := .root.Values.image.repository -}}
{{- if .digest -}}
{{- printf "%s@%s" $repo .digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .tag) -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- settings -> flags */}}

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

{{/* ---------------------------------------------------------------- pod placement */}}

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

{{/*
image-classifier.tolerations (dict "root" $ "pod" predictor|worker). The GPU-taint toleration (on by
default) is left out of a Knative predictor without kubernetes.podspec-tolerations; the chosen ones
(spot, `tolerations`) are refused there by the validate helper instead.
*/}}
{{- define "image-classifier.tolerations" -}}
{{- $v := .root.Values -}}
{{- $t := list -}}
{{- $allowed := include "image-classifier.podFeature" (dict "root" .root "pod" .pod "flag" "kubernetes.podspec-tolerations") -}}
{{- if and $v.gpu.enabled $v.gpu.tolerateGpuTaint $allowed -}}
{{- $t = append $t (dict "key" $v.gpu.resourceName "operator" "Exists" "effect" "NoSchedule") -}}
{{- end -}}
{{- if $v.spot.enabled -}}
{{- $t = concat $t $v.spot.tolerations -}}
{{- end -}}
{{- $t = concat $t $v.tolerations -}}
{{- if $t -}}
tolerations:
{{- toYaml $t | nindent 2 }}
{{- end -}}
{{- end -}}

{{- define "image-classifier.affinity" -}}
{{- if .Values.spot.enabled -}}
affinity:
  nodeAffinity:
    # Prefer spot; without spot capacity the scheduler (and Karpenter) falls back to on-demand.
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: {{ .Values.spot.weight }}
        preference:
          matchExpressions:
            - key: karpenter.sh/capacity-type
              operator: In
              values:
                - spot
{{- end -}}
{{- end -}}

{{/* image-classifier.topologySpread (dict "root" $ "selector" LABELS-YAML) */}}
{{- define "image-classifier.topologySpread" -}}
{{- $v := .root.Values.topologySpread -}}
{{- if $v.enabled -}}
topologySpreadConstraints:
{{- range $v.topologyKeys }}
  - maxSkew: {{ $v.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $v.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- $.selector | nindent 8 }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Volumes for the writable paths of a read-only root filesystem. */}}
{{- define "image-classifier.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.scratch.cacheSizeLimit }}
{{- end -}}

{{- define "image-classifier.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /var/cache/classifier
{{- end -}}

{{/*
Env shared by predictor and worker: image-classifier.commonEnv (dict "root" $ "pod" predictor|worker).
POD_NAME/POD_NAMESPACE come from the downward API where fieldRef is allowed; a Knative predictor
without kubernetes.podspec-fieldref gets the namespace as a value and its name from the hostname
(predictor/podinfo.py).
*/}}
{{- define "image-classifier.commonEnv" -}}
{{- $v := .root.Values -}}
- name: HF_HOME
  value: /var/cache/classifier/huggingface
{{- if include "image-classifier.podFeature" (dict "root" .root "pod" .pod "flag" "kubernetes.podspec-fieldref") }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- else }}
- name: POD_NAMESPACE
  value: {{ .root.Release.Namespace | quote }}
{{- end }}
{{- if and $v.queue.enabled $v.queue.passwordSecret.name }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.queue.passwordSecret.name }}
      key: {{ $v.queue.passwordSecret.key }}
{{- end }}
{{- end -}}

{{/* image-classifier.resources (dict "root" $ "resources" MAP "gpu" BOOL) */}}
{{- define "image-classifier.resources" -}}
{{- $r := deepCopy .resources -}}
{{- if .gpu -}}
{{- $g := .root.Values.gpu -}}
{{- $_ := set $r "requests" (merge (dict $g.resourceName (int64 $g.count | toString)) (default (dict) $r.requests)) -}}
{{- $_ := set $r "limits" (merge (dict $g.resourceName (int64 $g.count | toString)) (default (dict) $r.limits)) -}}
{{- end -}}
resources:
  {{- toYaml $r | nindent 2 }}
{{- end -}}

{{/* ---------------------------------------------------------------- predictor */}}

{{/*
The predictor component of the InferenceService (pod spec plus the kserve-container), shared by the
stable predictor and the Standard-mode canary.
image-classifier.predictorPod (dict "root" $ "image" REF "storageUri" URI "track" stable|canary)
*/}}
{{- define "image-classifier.predictorPod" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $selector := include "image-classifier.predictorSelectorLabels" $root -}}
labels:
  {{- $selector | nindent 2 }}
  image-classifier.io/track: {{ .track }}
serviceAccountName: {{ include "image-classifier.serviceAccountName" $root }}
automountServiceAccountToken: false
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if eq $v.deploymentMode "Standard" }}
terminationGracePeriodSeconds: {{ include "image-classifier.terminationGracePeriodSeconds" $root }}
{{- end }}
{{- /* Gated Knative fields: rendered when allowed, else left out (defaults) or refused by validate (choices). */}}
{{- $feature := dict "root" $root "pod" "predictor" }}
{{- if and $v.podSecurityContext (include "image-classifier.podFeature" (set $feature "flag" "kubernetes.podspec-securitycontext")) }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "image-classifier.tolerations" (dict "root" $root "pod" "predictor") }}
{{ . }}
{{- end }}
{{- with include "image-classifier.affinity" $root }}
{{ . }}
{{- end }}
{{- if include "image-classifier.podFeature" (set $feature "flag" "kubernetes.podspec-topologyspreadconstraints") }}
{{- with include "image-classifier.topologySpread" (dict "root" $root "selector" $selector) }}
{{ . }}
{{- end }}
{{- end }}
volumes:
  {{- include "image-classifier.scratchVolumes" $root | nindent 2 }}
containers:
  - name: kserve-container
    image: {{ .image }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    {{- /* The image's ENTRYPOINT is `python -m predictor serve`; every setting is a flag. */}}
    args:
      {{- $fixed := dict "model_dir" "/mnt/models" "model_name" $v.model.name "http_port" 8080 "cache_dir" "/var/cache/classifier/artifacts" }}
      {{- if $v.model.version }}{{ $_ := set $fixed "model_version" $v.model.version }}{{ end }}
      {{- if $v.queue.enabled }}{{ $_ := set $fixed "redis_url" (include "image-classifier.redisUrl" $root) }}{{ end }}
      {{- include "image-classifier.settingsArgs" (dict "settings" $v.settings "fixed" $fixed) | nindent 6 }}
    env:
      - name: PROTOCOL
        value: v2
      {{- if .storageUri }}
      - name: STORAGE_URI
        value: {{ .storageUri | quote }}
      {{- end }}
      {{- include "image-classifier.commonEnv" (dict "root" $root "pod" "predictor") | nindent 6 }}
    ports:
      - name: http1
        containerPort: 8080
        protocol: TCP
    {{- include "image-classifier.resources" (dict "root" $root "resources" $v.resources "gpu" $v.gpu.enabled) | nindent 4 }}
    startupProbe:
      httpGet:
        path: /v2/health/live
        port: 8080
      periodSeconds: {{ $v.probes.startup.periodSeconds }}
      failureThreshold: {{ $v.probes.startup.failureThreshold }}
    readinessProbe:
      httpGet:
        path: /v2/models/{{ $v.model.name }}/ready
        port: 8080
      periodSeconds: {{ $v.probes.readiness.periodSeconds }}
      timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
      failureThreshold: {{ $v.probes.readiness.failureThreshold }}
    livenessProbe:
      httpGet:
        path: /v2/health/live
        port: 8080
      periodSeconds: {{ $v.probes.liveness.periodSeconds }}
      timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
      failureThreshold: {{ $v.probes.liveness.failureThreshold }}
    {{- /*
    Knative refuses `lifecycle` and `terminationGracePeriodSeconds`: there queue-proxy drains the pod
    and the grace period follows the revision timeout (the component's `timeout`).
    */}}
    {{- if eq $v.deploymentMode "Standard" }}
    lifecycle:
      preStop:
        exec:
          # Keep serving while endpoints stop routing here; SIGTERM then drains the queue.
          command: ["sleep", "{{ $v.drain.preStopSleepSeconds }}"]
    {{- end }}
    securityContext:
      {{- toYaml $v.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "image-classifier.scratchMounts" $root | nindent 6 }}
{{- end -}}

{{/* ---------------------------------------------------------------- validation */}}

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
{{- if and $v.karpenter.nodePool.enabled $v.karpenter.nodePool.gpuTaint $v.gpu.enabled $v.gpu.tolerateGpuTaint -}}
{{- $needs = append $needs (list "karpenter.nodePool.gpuTaint" "the NodePool taints its nodes nvidia.com/gpu, so the predictor needs the toleration" (list "kubernetes.podspec-tolerations")) -}}
{{- end -}}
{{- if $v.nodeSelector -}}
{{- $needs = append $needs (list "nodeSelector" "a node selector" (list "kubernetes.podspec-nodeselector")) -}}
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
{{- if eq $v.deploymentMode "Standard" -}}
{{- if and (eq (int64 $a.minReplicas) 0) (not $a.allowStandardScaleToZero) -}}
{{- $m = append $m "autoscaling.minReplicas is 0 in Standard mode: Standard mode has no activator, so requests fail while no pod runs. Use deploymentMode=Knative for scale to zero, set minReplicas >= 1, or set autoscaling.allowStandardScaleToZero=true if something else wakes the Deployment." -}}
{{- end -}}
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
{{- if $m -}}
{{- fail (printf "\n\nimage-classifier: invalid values:\n  - %s\n" (join "\n  - " $m)) -}}
{{- end -}}
{{- end -}}
