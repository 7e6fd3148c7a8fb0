"""Every architecture of the package by key (roles: ``nnunet_teachformer.roster``)."""
from typing import Dict

from nnunet_teachformer.networks.hdenseformer import HDENSEFORMER_LIGHT_SPEC, HDENSEFORMER_SPEC
from nnunet_teachformer.networks.spec import NetworkSpec
from nnunet_teachformer.networks.swin_unetr import SWIN_UNETR_SPEC
from nnunet_teachformer.networks.unetr import UNETR_SPEC
from nnunet_teachformer.networks.uxnet import UXNET_LIGHT_SPEC, UXNET_SPEC

NETWORKS: Dict[str, NetworkSpec] = {
    "hdenseformer": HDENSEFORMER_SPEC,
    "swinunetr": SWIN_UNETR_SPEC,
    "unetr": UNETR_SPEC,
    "uxnet": UXNET_SPEC,
    "hdenseformer_light": HDENSEFORMER_LIGHT_SPEC,
    "uxnet_light": UXNET_LIGHT_SPEC,
}
