"""The meta-learners: FOMAML, Reptile, iMAML, second-order MAML, SeqFOMAML (and, in
`pymeta.metalearners.distributed`, their MPI-distributed variants)."""

from pymeta.metalearners.fomaml import FOMAMLMetaLearner
from pymeta.metalearners.imaml import iMAMLMetaLearner
from pymeta.metalearners.maml import MAMLMetaLearner
from pymeta.metalearners.reptile import ReptileMetaLearner
from pymeta.metalearners.seq_fomaml import SeqFOMAMLMetaLearner

__all__ = ["FOMAMLMetaLearner", "ReptileMetaLearner", "iMAMLMetaLearner", "MAMLMetaLearner",
           "SeqFOMAMLMetaLearner"]
