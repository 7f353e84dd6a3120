#!/usr/bin/env bash
# Download the released CustomResourceDefinitions of every operator the
# manifests use, at the pinned tags below, for tests/deploy to validate the
# custom resources against (they stay out of the repository). Each file is
# checked against its pinned sha256.
#
#   deploy/tools/crds.sh [DIR]      default .run/crds; then SHOP_CRDS_DIR=DIR
#
# Refresh: new tag and commit here, new checksums (sha256sum), and the
# operator versions in deploy/k8s/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.run/crds}"
RAW="${CRDS_BASE_URL:-https://raw.githubusercontent.com}"  # a mirror, if any

# folder  repository  tag  commit  path  sha256
PINS="
rabbitmq-cluster-operator rabbitmq/cluster-operator v2.22.3 06cda8e8e1a927a652dda20a1b169fe7667f4916 config/crd/bases/rabbitmq.com_rabbitmqclusters.yaml 3d12de2e4281eb91c49d9860b733b6aa741fe0f608c6a2c4160226fe4993d0de
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_bindings.yaml 0693bfdddd5cb6a708e2ef78926754751851a8091c361bf878daf8289f8dcc3b
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_exchanges.yaml e768860fab0247d3f71126bc2885537bba5780869dbebaa5b8519b003e26821b
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_operatorpolicies.yaml b6d74083f71fe93db3268e39311c051e4e56153d4c8b5efcfca65d2df853fa8f
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_permissions.yaml a92ba1dcec414008c6341b9ab5d508377d02809a9d6304ce780066e8f2daf940
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_policies.yaml 33f1c3983f781764b4abd593bc7a7beaed988b1bab74a20f96c5745b6bf3e67c
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_queues.yaml 7dd544deb66301c4c31ba025d3d9c52fe09deff964e5f49b245f53aad02bec40
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_topicpermissions.yaml bfebc254d7369e3fdb60150e744f96ab48594d31c667c1a5b9bcc08961d2f144
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_users.yaml 1598b2ffbba773f6fd5303d0e1c8f909b95d263be9949f480298e978439c26a2
rabbitmq-messaging-topology-operator rabbitmq/messaging-topology-operator v1.20.1 e736e2df95cd2fd8027f793dfce9020f5de86c1a config/crd/bases/rabbitmq.com_vhosts.yaml 4288993fe2819d023fe65ca6715840dad0052c5c1a024f163cf390b19a2d4cf9
mongodb-kubernetes-operator mongodb/mongodb-kubernetes-operator v0.13.0 f6a53c96128e3e998f4c274964876206ce409305 config/crd/bases/mongodbcommunity.mongodb.com_mongodbcommunity.yaml 15927cb1b9b4ace543128a0f399f9a43e6035882db921c8373d4aee695271e34
keda kedacore/keda v2.20.1 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a config/crd/bases/eventing.keda.sh_cloudeventsources.yaml 0a022f574f5c79c921195abab2c4bc25357e6ca64ecc4ca7273159386c8a6926
keda kedacore/keda v2.20.1 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a config/crd/bases/eventing.keda.sh_clustercloudeventsources.yaml e187a970523c8042815447c6486b30caed74b0688a5b69957e2a008ce6b968bf
keda kedacore/keda v2.20.1 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a config/crd/bases/keda.sh_clustertriggerauthentications.yaml dbe2e63885729be77cc9012b6e1a3d19e1c18e561ad72edf213791863fa4389a
keda kedacore/keda v2.20.1 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a config/crd/bases/keda.sh_scaledjobs.yaml 316c88a1895781e7f67c21508297f1c99bdfc0e55427a4990877af3172a63286
keda kedacore/keda v2.20.1 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a config/crd/bases/keda.sh_scaledobjects.yaml 207afc4ca44fd9e3f4bbfb1c8fae08f3a365e098a52714fe8eb672bbd239cbcd
keda kedacore/keda v2.20.1 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a config/crd/bases/keda.sh_triggerauthentications.yaml 990851d71901905bc9bebb50cd964bfc909ca24a03dd401a626a1894bb912ecd
prometheus-operator prometheus-operator/prometheus-operator v0.93.0 6adcebc5076c34f4f55f8f5f7b1e528929373ac7 example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32
prometheus-operator prometheus-operator/prometheus-operator v0.93.0 6adcebc5076c34f4f55f8f5f7b1e528929373ac7 example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml 45a93443daa687d3654f7e9631909ff7edcdf3ec09c5e60251b74aa2722aee5d
prometheus-operator prometheus-operator/prometheus-operator v0.93.0 6adcebc5076c34f4f55f8f5f7b1e528929373ac7 example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml 78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d
"

command -v curl >/dev/null || { echo "crds.sh: curl is required" >&2; exit 2; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
echo "$PINS" | while read -r folder repo tag commit path sum; do
  [ -n "$folder" ] || continue
  mkdir -p "$TMP/$folder"
  file="$TMP/$folder/$(basename "$path")"
  curl -fsSL --retry 3 "$RAW/$repo/$commit/$path" -o "$file" \
    || { echo "crds.sh: cannot download $repo $tag $path" >&2; exit 1; }
  echo "$sum  $file" | sha256sum --check --quiet - \
    || { echo "crds.sh: $repo $tag $path does not match its pinned sha256" >&2; exit 1; }
done
rm -rf "$DEST" && mkdir -p "$(dirname "$DEST")" && mv "$TMP" "$DEST" && trap - EXIT
echo "SHOP_CRDS_DIR=$DEST"
