"""Server-side model persistor that starts FL from the *pretrained* weights and keeps a resumable copy.

NVFlare's PTFileModelPersistor builds the model from class + config, i.e. random weights, unless a checkpoint
file is given. Shipping a 500 MB checkpoint inside the job is not an option, so the server loads the same
pretrained model the sites load (hub name or local folder). After every round the global model is also written
to <server workspace>/checkpoints/<job_id>/ (a volume in the containers) with progress.json, so a job cut short
by a server restart can be resubmitted from its last completed round (scripts/submit_job.py --resume JOB_ID).
"""

import json
import os

from nvflare.app_common.abstract.model import ModelLearnableKey
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_opt.pt.file_model_persistor import PTFileModelPersistor

from model import load_model, tied_aliases

CHECKPOINT_DIR = "checkpoints"
PROGRESS_FILE = "progress.json"


class PretrainedModelPersistor(PTFileModelPersistor):
    def __init__(self, model_name_or_path: str, source_ckpt_file_full_name: str = None, **kwargs):
        """
        Args:
            model_name_or_path: what ``AutoModelForCausalLM.from_pretrained`` loads when no checkpoint is given.
            source_ckpt_file_full_name: a persisted global model (``FL_global_model.pt``) to start from instead,
                e.g. to resume a job; takes precedence over the pretrained weights.
        """
        kwargs.setdefault("allow_numpy_conversion", False)
        super().__init__(model=None, source_ckpt_file_full_name=source_ckpt_file_full_name, **kwargs)
        self.model_name_or_path = model_name_or_path
        self._resume_dir = None

    def _initialize(self, fl_ctx):
        super()._initialize(fl_ctx)
        root = fl_ctx.get_engine().get_workspace().get_root_dir()
        self._resume_dir = os.path.join(root, CHECKPOINT_DIR, fl_ctx.get_job_id())
        os.makedirs(self._resume_dir, exist_ok=True)
        if self.source_ckpt_file_full_name:
            self.log_info(fl_ctx, f"initial global model: checkpoint {self.source_ckpt_file_full_name}")
        else:
            self.log_info(fl_ctx, f"initial global model: pretrained weights of {self.model_name_or_path!r}")
            self.model = load_model(self.model_name_or_path)

    def load_model(self, fl_ctx):
        ml = super().load_model(fl_ctx)
        # Tied weights travel once (the sites re-tie them on load); drop the alias from what is persisted
        # too, or the checkpoint would keep its initial, never-aggregated copy.
        if self.model is not None:
            for key in tied_aliases(self.model.state_dict()):
                ml[ModelLearnableKey.WEIGHTS].pop(key, None)
                self.persistence_manager.var_dict.pop(key, None)
        return ml

    def save_model(self, ml, fl_ctx):
        super().save_model(ml, fl_ctx)
        # Same atomic write as the app-folder copy; progress.json is replaced only after the weights are in place.
        self.save_model_file(os.path.join(self._resume_dir, self.global_model_file_name))
        progress = {
            "job_id": fl_ctx.get_job_id(),
            "completed_round": fl_ctx.get_prop(AppConstants.CURRENT_ROUND),
            "checkpoint": os.path.join(self._resume_dir, self.global_model_file_name),
            "model": self.model_name_or_path,
        }
        tmp = os.path.join(self._resume_dir, PROGRESS_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(progress, f)
        os.replace(tmp, os.path.join(self._resume_dir, PROGRESS_FILE))
