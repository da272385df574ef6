from pymeta.metalearners.fomaml import FOMAMLMetaLearner
from pymeta.metalearners.reptile import ReptileMetaLearner

__all__ = ["FOMAMLMetaLearner", "ReptileMetaLearner"]
