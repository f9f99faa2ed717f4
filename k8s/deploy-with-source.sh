#!/usr/bin/env bash
# Deploys Context-Engine's mcp-indexer and mcp-memory with their source from git (gitsync) or from
# the nodes (local), as the user's guide describes. Run with --help for the usage.
set -euo pipefail

NAMESPACE=context-engine
CONFIGMAP=context-engine-config
DEPLOYMENTS=(mcp-memory mcp-indexer)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBECTL="${KUBECTL:-kubectl}"

usage() {
    cat <<EOF
Usage:
  $(basename "$0") [options] git <repo-url> [branch]
  $(basename "$0") [options] local

Modes:
  git <repo-url> [branch]  gitsync keeps <branch> (default: main) of <repo-url> in /work/latest
                           of both apps. URLs: https://host/org/repo.git, http://..., git://...,
                           ssh://[user@]host[:port]/path or user@host:org/repo.git (SSH).
                           An SSH URL needs the Secret git-ssh-key in namespace $NAMESPACE.
  local                    the source is already on the nodes (overlays/local: a hostPath
                           PersistentVolume at /srv/context-engine/source); no gitsync.

Options:
  --dry-run          print what would be fixed and the manifests that would be applied; only
                     reads the cluster (the ConfigMap and the Secrets), changes nothing
  --username NAME    private HTTPS repository: sets GIT_USERNAME and wires the password file
                     from the Secret git-https-credentials (key: password) into gitsync
  --period SECONDS   GIT_SYNC_PERIOD, seconds between syncs (default: keep the ConfigMap's,
                     60 for a new one)
  --variant NAME     how gitsync runs in git mode: native (default; a native sidecar,
                     Kubernetes >= 1.29), classic (a sidecar container) or one-time (an init
                     container: one sync at pod start) or relay (native sidecars that fetch
                     from a gitsync relay Deployment, which alone fetches from the forge and
                     triggers them after each commit; needs the Secret git-sync-trigger)
  --webhook          native variant: also the trigger Service (and its Secret
                     git-sync-trigger) so a push webhook syncs at once: overlays/git-webhook
  -h, --help         show this help

It patches the ConfigMap $CONFIGMAP (SOURCE_CODE_MODE, GIT_REPO_URL, GIT_BRANCH,
GIT_SYNC_PERIOD, GIT_USERNAME), applies everything with 'kubectl apply -k', then restarts
deployment/mcp-memory and deployment/mcp-indexer in namespace $NAMESPACE.
The ConfigMap's GIT_SYNC_PERIOD and GIT_USERNAME are kept unless given here. A GIT_PASSWORD
in the ConfigMap (the guide's "kubectl patch configmap ... GIT_PASSWORD") is moved into the
Secret git-https-credentials and removed from the ConfigMap, which both apps read.
Environment: KUBECTL (default: kubectl).
EOF
}

die() {
    echo "error: $*" >&2
    exit 1
}

note() {
    echo "$*" >&2
}

# A fix the deployment needs: printed before anything is applied; fatal unless --dry-run.
problem() {
    if $dry_run; then
        echo "fix needed (the deployment would stop here): $*" >&2
    else
        die "$*"
    fi
}

dry_run=false
username=""
period=""
variant=native
webhook=false
positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --dry-run) dry_run=true ;;
        --username)
            [ $# -ge 2 ] || die "--username needs a value"
            username="$2"
            shift
            ;;
        --username=*) username="${1#*=}" ;;
        --period)
            [ $# -ge 2 ] || die "--period needs a value"
            period="$2"
            shift
            ;;
        --period=*) period="${1#*=}" ;;
        --variant)
            [ $# -ge 2 ] || die "--variant needs a value"
            variant="$2"
            shift
            ;;
        --variant=*) variant="${1#*=}" ;;
        --webhook) webhook=true ;;
        --) shift; positional+=("$@"); break ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *) positional+=("$1") ;;
    esac
    shift
done

[ ${#positional[@]} -ge 1 ] || { usage >&2; exit 2; }
mode="${positional[0]}"
url=""
branch=main
transport=""
case "$mode" in
    git)
        [ ${#positional[@]} -ge 2 ] || die "git mode needs a repository URL: $(basename "$0") git <repo-url> [branch]"
        [ ${#positional[@]} -le 3 ] || die "too many arguments for git mode (see --help)"
        url="${positional[1]}"
        [ ${#positional[@]} -lt 3 ] || branch="${positional[2]}"
        # No spaces, quotes, backslashes or control characters: the URL goes into YAML as is.
        [[ "$url" =~ ^[A-Za-z0-9._~:/?#@!\$\&\'\(\)*+,\;=%-]+$ ]] \
            || die "not a repository URL: '$url'"
        case "$url" in
            https://?* | http://?* | git://?*) transport=http ;;
            ssh://?*) transport=ssh ;;
            *://*) die "unsupported URL scheme in '$url': use https://, http://, git://, ssh:// or user@host:path" ;;
            ?*@?*:?*) transport=ssh ;;
            *) die "not a repository URL: '$url' (use https://host/org/repo.git or git@host:org/repo.git)" ;;
        esac
        [ "${url#git://}" = "$url" ] || transport=git
        if ! [[ "$branch" =~ ^[A-Za-z0-9._/+-]+$ ]] || [[ "$branch" == -* ]]; then
            die "not a branch, tag or commit: '$branch'"
        fi
        ;;
    local)
        [ ${#positional[@]} -eq 1 ] || die "local mode takes no arguments (see --help)"
        [ -z "$username" ] || die "--username is for git mode"
        ;;
    *) die "unknown mode '$mode': use 'git <repo-url> [branch]' or 'local' (see --help)" ;;
esac

case "$variant" in
    native) overlay=git; list=initContainers ;;
    classic) overlay=git-classic; list=containers ;;
    one-time) overlay=git-one-time; list=initContainers ;;
    relay) overlay=relay; list=initContainers ;;
    *) die "unknown --variant '$variant': use native, classic, one-time or relay" ;;
esac
[ "$mode" = git ] || overlay=local
if $webhook; then
    if [ "$mode" != git ] || [ "$variant" != native ]; then
        die "--webhook is for git mode with the native variant (a push reaches a running sidecar)"
    fi
    overlay=git-webhook
fi
if [ -n "$period" ]; then
    [ "$mode" = git ] || die "--period is for git mode"
    if ! [[ "$period" =~ ^[0-9]+$ ]] || [ "$period" -eq 0 ]; then
        die "--period must be a whole number of seconds > 0"
    fi
fi
if [ -n "$username" ]; then
    [ "$transport" = http ] || die "--username is for http(s) URLs; an SSH URL authenticates with the Secret git-ssh-key"
    [[ "$username" =~ ^[A-Za-z0-9._@+-]+$ ]] || die "not a username: '$username'"
fi

command -v "$KUBECTL" >/dev/null 2>&1 || die "kubectl not found (set KUBECTL to its path)"

secret_exists() {
    "$KUBECTL" get secret "$1" -n "$NAMESPACE" -o name >/dev/null 2>&1
}

# One key of the live ConfigMap (empty when it or the key is missing). Never used for
# GIT_PASSWORD: that value only ever goes through a pipe, never into a variable or an argument.
configmap_value() {
    "$KUBECTL" get configmap "$CONFIGMAP" -n "$NAMESPACE" -o "jsonpath={.data.$1}" 2>/dev/null || true
}

configmap_has_password() {
    [ "$("$KUBECTL" get configmap "$CONFIGMAP" -n "$NAMESPACE" -o 'jsonpath={.data.GIT_PASSWORD}' 2>/dev/null | wc -c)" -gt 0 ]
}

secret_has_key() {
    [ "$("$KUBECTL" get secret "$1" -n "$NAMESPACE" -o "jsonpath={.data.$2}" 2>/dev/null | wc -c)" -gt 0 ]
}

# The host (and port) ssh-keyscan must ask, from an ssh:// or scp-like URL.
keyscan_command() {
    local rest host port=""
    if [ "${url#ssh://}" != "$url" ]; then
        rest="${url#ssh://}"
        rest="${rest%%/*}"
        rest="${rest##*@}"
        host="${rest%%:*}"
        [ "$host" = "$rest" ] || port="${rest#*:}"
    else
        rest="${url%%:*}"
        host="${rest##*@}"
    fi
    if [ -n "$port" ]; then
        echo "ssh-keyscan -p $port $host > known_hosts"
    else
        echo "ssh-keyscan $host > known_hosts"
    fi
}

# What the live ConfigMap already says is kept: an apply -k would otherwise reset the period to
# the base's 60 and GIT_USERNAME to "" (the guide patches both in by hand).
if [ "$mode" = git ]; then
    [ -n "$period" ] || period="$(configmap_value GIT_SYNC_PERIOD)"
    if [ -n "$period" ] && ! [[ "$period" =~ ^[0-9]+(ms|s|m|h)?$ ]]; then
        die "the ConfigMap's GIT_SYNC_PERIOD is not a period: '$period' (give --period SECONDS)"
    fi
    if [ -z "$username" ] && [ "$transport" = http ]; then
        username="$(configmap_value GIT_USERNAME)"
        if [ -n "$username" ] && ! [[ "$username" =~ ^[A-Za-z0-9._@+-]+$ ]]; then
            die "the ConfigMap's GIT_USERNAME is not a username: '$username'"
        fi
    fi
fi

move_password=false
if [ "$mode" = git ] && configmap_has_password; then
    # The guide's HTTPS set-up: a token in a ConfigMap that both apps read through envFrom.
    if [ "$transport" != http ]; then
        problem "the ConfigMap $CONFIGMAP holds GIT_PASSWORD, which both apps read (envFrom) and an ${transport:-local} deployment does not use. Remove it:
  $KUBECTL patch configmap $CONFIGMAP -n $NAMESPACE --type json -p '[{\"op\":\"remove\",\"path\":\"/data/GIT_PASSWORD\"}]'"
    elif [ -z "$username" ]; then
        problem "the ConfigMap $CONFIGMAP holds GIT_PASSWORD but no GIT_USERNAME: give --username NAME (any name works with a GitHub token)"
    elif secret_exists git-https-credentials; then
        problem "the ConfigMap $CONFIGMAP holds GIT_PASSWORD, which both apps read (envFrom), and the Secret git-https-credentials exists too. Keep the password only in the Secret (check that its 'password' key is the token), then remove it from the ConfigMap:
  $KUBECTL patch configmap $CONFIGMAP -n $NAMESPACE --type json -p '[{\"op\":\"remove\",\"path\":\"/data/GIT_PASSWORD\"}]'"
    else
        move_password=true
        note "the ConfigMap $CONFIGMAP holds GIT_PASSWORD, which both apps read (envFrom): it is moved into the Secret git-https-credentials (key: password, read by gitsync alone as a file) and removed from the ConfigMap. By hand:
  $KUBECTL get configmap $CONFIGMAP -n $NAMESPACE -o 'jsonpath={.data.GIT_PASSWORD}' \\
    | $KUBECTL create secret generic git-https-credentials -n $NAMESPACE --from-file=password=/dev/stdin
  $KUBECTL patch configmap $CONFIGMAP -n $NAMESPACE --type json -p '[{\"op\":\"remove\",\"path\":\"/data/GIT_PASSWORD\"}]'"
    fi
fi

credentials=false
if [ "$transport" = http ] && [ -n "$username" ]; then
    credentials=true
    if ! $move_password && ! secret_exists git-https-credentials; then
        problem "a private HTTPS repository (username '$username') needs the Secret git-https-credentials (key: password) in namespace $NAMESPACE, and it is missing. Create it with:
  kubectl create secret generic git-https-credentials -n $NAMESPACE \\
    --from-literal=username=$username --from-file=password=./token.txt"
    fi
fi

if [ "$transport" = ssh ]; then
    if ! secret_exists git-ssh-key; then
        problem "an SSH URL needs the Secret git-ssh-key in namespace $NAMESPACE, and it is missing. Create it with:
  $(keyscan_command)   # compare with the host's published fingerprints
  kubectl create secret generic git-ssh-key -n $NAMESPACE \\
    --from-file=ssh-private-key=\$HOME/.ssh/context_engine_git --from-file=known_hosts=./known_hosts"
    elif ! secret_has_key git-ssh-key known_hosts; then
        problem "the Secret git-ssh-key has no known_hosts: gitsync checks the server's host key (as git-sync does) and every sync would fail with 'unknown host key'. Add the host's keys:
  $(keyscan_command)   # compare with the host's published fingerprints
  kubectl create secret generic git-ssh-key -n $NAMESPACE \\
    --from-file=ssh-private-key=\$HOME/.ssh/context_engine_git --from-file=known_hosts=./known_hosts \\
    --dry-run=client -o yaml | kubectl apply -f -"
    fi
fi
if $webhook && ! secret_exists git-sync-trigger; then
    problem "--webhook needs the Secret git-sync-trigger (key: secret, the webhook's shared secret). Create it with:
  head -c 32 /dev/urandom | base64 | tr -d '\\n' > trigger-secret
  kubectl create secret generic git-sync-trigger -n $NAMESPACE --from-file=secret=./trigger-secret"
fi
# Relay mode (issue 17): the relay and the sidecars share the secret that signs its triggers.
if [ "$overlay" = relay ]; then
    if $dry_run; then
        note "note: --variant relay needs the Secret git-sync-trigger (key: secret) in namespace $NAMESPACE (--dry-run does not check the cluster)"
    elif ! secret_exists git-sync-trigger; then
        die "--variant relay needs the Secret git-sync-trigger (key: secret) in namespace $NAMESPACE, and it is missing. Create it with:
  kubectl create secret generic git-sync-trigger -n $NAMESPACE \\
    --from-literal=secret=\"\$(head -c 32 /dev/urandom | base64)\""
    fi
fi

# Beside the overlays: kustomize only accepts a relative path to them.
work="$(mktemp -d "$HERE/.deploy.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The kustomization applied: the chosen overlay plus the ConfigMap patch (and, for --username,
# the two env vars that make gitsync use the password file).
{
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - ../overlays/$overlay"
    echo "patches:"
    echo "  - patch: |-"
    echo "      apiVersion: v1"
    echo "      kind: ConfigMap"
    echo "      metadata:"
    echo "        name: $CONFIGMAP"
    echo "      data:"
    echo "        SOURCE_CODE_MODE: \"$mode\""
    if [ "$mode" = git ]; then
        echo "        GIT_REPO_URL: \"$url\""
        echo "        GIT_BRANCH: \"$branch\""
        echo "        GIT_USERNAME: \"$username\""
        [ -z "$period" ] || echo "        GIT_SYNC_PERIOD: \"$period\""
    fi
    if $credentials && [ "$overlay" != relay ]; then  # relay mode: the relay's, below
        cat <<EOF
  - target:
      kind: Deployment
      name: mcp-indexer|mcp-memory
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: any
      spec:
        template:
          spec:
            $list:
              - name: git-sync
                env:
                  - name: GITSYNC_USERNAME
                    valueFrom:
                      configMapKeyRef:
                        name: $CONFIGMAP
                        key: GIT_USERNAME
                  - name: GITSYNC_PASSWORD_FILE
                    value: /etc/git-secret/password
EOF
    fi
    if $credentials && [ "$overlay" = relay ]; then
        # In relay mode the relay fetches from the forge: it gets the credentials too.
        cat <<EOF
  - target:
      kind: Deployment
      name: gitsync-relay
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: GITSYNC_USERNAME, valueFrom: {configMapKeyRef: {name: $CONFIGMAP, key: GIT_USERNAME}}}
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: GITSYNC_PASSWORD_FILE, value: /etc/git-secret/password}
EOF
    fi
} >"$work/kustomization.yaml"

if $dry_run; then
    note "# --dry-run: the manifests '$KUBECTL apply -k' would apply ($mode mode, overlays/$overlay); nothing changed"
    "$KUBECTL" kustomize "$work"
    exit 0
fi

if $move_password; then
    "$KUBECTL" get configmap "$CONFIGMAP" -n "$NAMESPACE" -o 'jsonpath={.data.GIT_PASSWORD}' \
        | "$KUBECTL" create secret generic git-https-credentials -n "$NAMESPACE" --from-file=password=/dev/stdin >/dev/null
    "$KUBECTL" patch configmap "$CONFIGMAP" -n "$NAMESPACE" --type json \
        -p '[{"op":"remove","path":"/data/GIT_PASSWORD"}]' >/dev/null
    note "moved GIT_PASSWORD from the ConfigMap $CONFIGMAP into the Secret git-https-credentials"
fi
note "applying $mode mode (overlays/$overlay) to namespace $NAMESPACE"
"$KUBECTL" apply -k "$work"
for deployment in "${DEPLOYMENTS[@]}"; do
    "$KUBECTL" rollout restart "deployment/$deployment" -n "$NAMESPACE"
done
note "done. Follow the sync with: kubectl logs deployment/mcp-indexer -c git-sync -n $NAMESPACE -f"
