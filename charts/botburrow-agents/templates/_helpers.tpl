{{/* Labels every object carries (part-of, managed-by, chart); selectors never use them. */}}
{{- define "botburrow.commonLabels" -}}
app.kubernetes.io/part-of: botburrow
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Image reference: <registry>/<repository>:<tag or appVersion>. Call with (list $ "coordinator"). */}}
{{- define "botburrow.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/%s:%s" $root.Values.image.registry (index . 1) (default $root.Chart.AppVersion $root.Values.image.tag) -}}
{{- end -}}

{{/* Pod-level security: non-root, RuntimeDefault seccomp (Pod Security "restricted"). */}}
{{- define "botburrow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: read-only root, no privilege escalation, no capabilities. */}}
{{- define "botburrow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* HTTP startup and liveness (/health) and readiness (/ready) probes on the named port "metrics".
     Up to 5 minutes to start: a process that starts before Valkey waits for it and serves
     /health only once connected; liveness checks begin after the startup probe succeeds. */}}
{{- define "botburrow.probes" -}}
startupProbe:
  httpGet:
    path: /health
    port: metrics
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /health
    port: metrics
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /ready
    port: metrics
  initialDelaySeconds: 2
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* Fails the render when a value combination cannot work. */}}
{{- define "botburrow.validate" -}}
{{- range $mode, $pool := .Values.runners.pools }}
{{- if and $pool.enabled (gt (int $pool.minReplicas) (int $pool.replicas)) }}
{{- fail (printf "runners.pools.%s: minReplicas (%d) must not exceed replicas (%d)" $mode (int $pool.minReplicas) (int $pool.replicas)) }}
{{- end }}
{{- if and $pool.enabled (lt (int $pool.maxReplicas) (int $pool.replicas)) }}
{{- fail (printf "runners.pools.%s: maxReplicas (%d) must not be below replicas (%d)" $mode (int $pool.maxReplicas) (int $pool.replicas)) }}
{{- end }}
{{- end }}
{{- $grace := int (default "100" .Values.config.SHUTDOWN_GRACE) }}
{{- if le (int .Values.runners.terminationGracePeriodSeconds) $grace }}
{{- fail (printf "runners.terminationGracePeriodSeconds (%d) must exceed config.SHUTDOWN_GRACE (%d)" (int .Values.runners.terminationGracePeriodSeconds) $grace) }}
{{- end }}
{{- if le (int .Values.coordinator.terminationGracePeriodSeconds) $grace }}
{{- fail (printf "coordinator.terminationGracePeriodSeconds (%d) must exceed config.SHUTDOWN_GRACE (%d)" (int .Values.coordinator.terminationGracePeriodSeconds) $grace) }}
{{- end }}
{{- range $k, $v := .Values.secret.values }}
{{- if hasKey $.Values.config $k }}
{{- fail (printf "%s is both in config and secret.values" $k) }}
{{- end }}
{{- end }}
{{- end -}}


{{/* NetworkPolicy egress rules shared by the runner and coordinator policies. */}}
{{- define "botburrow.np.dns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}
{{- define "botburrow.np.valkey" -}}
- to:
    - podSelector:
        matchLabels:
          app: valkey
  ports:
    - protocol: TCP
      port: 6379
{{- end -}}
{{- define "botburrow.np.hub" -}}
{{- if .Values.networkPolicy.hubPorts -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.hubNamespace }}
  ports:
    {{- range .Values.networkPolicy.hubPorts }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- end -}}
