{{/* The pods: image, placement, env, resources, and the fields the predictor and the worker share. */}}

{{/* image-classifier.imageRef (dict "root" $ "tag" TAG "digest" DIGEST): repo@digest, else repo:tag. */}}
{{- define "image-classifier.imageRef" -}}
{{- $repo := .root.Values.image.repository -}}
{{- if .digest -}}
{{- printf "%s@%s" $repo .digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .tag) -}}
{{- end -}}
{{- end -}}

{{/*
image-classifier.gpuToleration: the toleration of the GPU pool's taint, from gpu.toleration. Keyed on the
taint (nvidia.com/gpu by default), never on gpu.resourceName: MIG and time-sliced nodes advertise other
resource names but keep the pool's taint.
*/}}
{{- define "image-classifier.gpuToleration" -}}
{{- $g := .Values.gpu.toleration -}}
{{- $t := dict "key" $g.key "operator" $g.operator "effect" $g.effect -}}
{{- if eq $g.operator "Equal" }}{{ $_ := set $t "value" $g.value }}{{ end -}}
{{- toJson $t -}}
{{- end -}}

{{/*
image-classifier.tolerations (dict "root" $ "pod" predictor|worker). The GPU-taint toleration (on by
default; for pods that request a GPU: the worker only with queue.worker.gpu) is left out of a Knative predictor without kubernetes.podspec-tolerations; the chosen ones
(spot, `tolerations`) are refused there by the validate helper instead.
*/}}
{{- define "image-classifier.tolerations" -}}
{{- $v := .root.Values -}}
{{- $t := list -}}
{{- $allowed := include "image-classifier.podFeature" (dict "root" .root "pod" .pod "flag" "kubernetes.podspec-tolerations") -}}
{{- $gpu := and $v.gpu.enabled (or (ne .pod "worker") $v.queue.worker.gpu) -}}
{{- if and $gpu $v.gpu.toleration.enabled $allowed -}}
{{- $t = append $t (include "image-classifier.gpuToleration" .root | fromJson) -}}
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
{{- with .Values.sharedCache.existingClaim }}
- name: shared-cache
  persistentVolumeClaim:
    claimName: {{ . }}
{{- end }}
{{- end -}}

{{- define "image-classifier.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /var/cache/classifier
{{- if .Values.sharedCache.existingClaim }}
{{- /* cache_dir: artefacts and precision verdicts, shared by every pod of the release */}}
- name: shared-cache
  mountPath: /var/cache/classifier/artifacts
{{- end }}
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

{{/*
The pod fields the predictor and the worker share, written once: identity, pull secrets, priority,
termination grace (the worker always; the predictor in Standard mode: Knative refuses it and drains
through queue-proxy), security context, placement, and the scratch volumes (plus "extraVolumes").
A field behind a Knative feature flag is rendered for a Knative predictor only when knative.features
declares the flag (the validate helper refuses the values that need an undeclared one).
image-classifier.podSpec (dict "root" $ "pod" predictor|worker "selector" LABELS-YAML "extraVolumes" LIST)
*/}}
{{- define "image-classifier.podSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $feature := dict "root" $root "pod" .pod -}}
serviceAccountName: {{ include "image-classifier.serviceAccountName" $root }}
automountServiceAccountToken: false
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if or (eq .pod "worker") (eq $v.deploymentMode "Standard") }}
terminationGracePeriodSeconds: {{ include "image-classifier.terminationGracePeriodSeconds" $root }}
{{- end }}
{{- if and $v.podSecurityContext (include "image-classifier.podFeature" (set $feature "flag" "kubernetes.podspec-securitycontext")) }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "image-classifier.tolerations" (dict "root" $root "pod" .pod) }}
{{ . }}
{{- end }}
{{- with include "image-classifier.affinity" $root }}
{{ . }}
{{- end }}
{{- if include "image-classifier.podFeature" (set $feature "flag" "kubernetes.podspec-topologyspreadconstraints") }}
{{- with include "image-classifier.topologySpread" (dict "root" $root "selector" .selector) }}
{{ . }}
{{- end }}
{{- end }}
volumes:
  {{- include "image-classifier.scratchVolumes" $root | nindent 2 }}
  {{- with .extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

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
{{- $adminVolume := list -}}
{{- if $v.admin.tokenSecret.name -}}
{{- $adminVolume = list (dict "name" "admin-token" "secret" (dict "secretName" $v.admin.tokenSecret.name "items" (list (dict "key" $v.admin.tokenSecret.key "path" $v.admin.tokenSecret.key)))) -}}
{{- end }}
{{ include "image-classifier.podSpec" (dict "root" $root "pod" "predictor" "selector" $selector "extraVolumes" $adminVolume) }}
containers:
  - name: kserve-container
    image: {{ .image }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    {{- /* The image's ENTRYPOINT is `python -m predictor serve`; every setting is a flag. */}}
    args:
      {{- $fixed := dict "model_dir" "/mnt/models" "model_name" $v.model.name "http_port" 8080 "cache_dir" "/var/cache/classifier/artifacts" "http_metrics_port" $v.monitoring.metricsPort }}
      {{- if $v.admin.tokenSecret.name }}{{ $_ := set $fixed "admin_token_file" (printf "%s/%s" (include "image-classifier.adminTokenDir" $root) $v.admin.tokenSecret.key) }}{{ end }}
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
      {{- if $v.admin.tokenSecret.name }}
      - name: admin-token
        mountPath: {{ include "image-classifier.adminTokenDir" $root }}
        readOnly: true
      {{- end }}
{{- end -}}
