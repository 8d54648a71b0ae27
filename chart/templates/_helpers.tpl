{{/*
Names and labels. The other helpers live by concern: _settings.tpl (settings -> flags, durations),
_pod.tpl (the pod fields predictor and worker share, the predictor component), _knative.tpl (Knative
feature gates), _wake.tpl (scale to zero: who holds requests, timeouts sized for a cold start),
_validate.tpl (invalid combinations, one fail), _checkov.tpl (justified checkov skips).
*/}}

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

{{/* The PodMonitor's relabelings, shared by the predictor's and queue-proxy's endpoints. */}}
{{- define "image-classifier.podMonitorRelabelings" -}}
# revision: the Knative revision, or in Standard mode the track (stable/canary), so
# dashboards and alerts split canary from stable in both modes.
- sourceLabels:
    - __meta_kubernetes_pod_label_serving_knative_dev_revision
    - __meta_kubernetes_pod_label_image_classifier_io_track
  separator: ";"
  regex: "(.+);.*|;(.*)"
  replacement: "$1$2"
  targetLabel: revision
  action: replace
- sourceLabels:
    - __meta_kubernetes_pod_label_image_classifier_io_track
  targetLabel: track
  action: replace
- sourceLabels:
    - __meta_kubernetes_pod_label_serving_kserve_io_inferenceservice
  targetLabel: isvc
  action: replace
{{- end -}}
