"""Server-side model persistor that starts FL from the *pretrained* weights and keeps a resumable copy.

NVFlare's PTFileModelPersistor builds the model from class + config, i.e. random weights, unless a checkpoint
file is given. Shipping a 500 MB checkpoint inside the job is not an option, so the server loads the same
pretrained model the sites load (hub name or local folder). After every round the global model is also written
to <server workspace>/checkpoints/<job_id>/ (a volume in the containers) with progress.json, so a job cut short
by a server restart can be resubmitted from its last completed round (scripts/submit_job.py --resume JOB_ID).

With ``lora`` set, the global model is a LoRA adapter: the server wraps the pretrained model as the sites do, and
exchanges, aggregates and persists the adapter tensors only (a few MB); the LoRA settings go into the checkpoint
(``train_conf["lora"]``), so a resumed job and scripts/export_results.py know what the tensors are.
"""

import json
import os
import zipfile

from nvflare.app_common.abstract.model import ModelLearnableKey
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_opt.pt.file_model_persistor import PTFileModelPersistor

from fl_common.lora_targets import LoraTargetError
from fl_common.model import apply_lora, exchanged_keys, load_model

CHECKPOINT_DIR = "checkpoints"
PROGRESS_FILE = "progress.json"
LORA_INIT_SEED = 0  # the initial adapter (lora_A is random) is the same in every job with the same settings


class PretrainedModelPersistor(PTFileModelPersistor):
    def __init__(self, model_name_or_path: str, source_ckpt_file_full_name: str = None, lora: dict = None,
                 **kwargs):
        """
        Args:
            model_name_or_path: what ``AutoModelForCausalLM.from_pretrained`` loads when no checkpoint is given.
            source_ckpt_file_full_name: a persisted global model (``FL_global_model.pt``) to start from instead,
                e.g. to resume a job; takes precedence over the pretrained weights.
            lora: LoRA-only exchange: ``model.apply_lora`` arguments (r, alpha, dropout, target_modules), the
                same the sites get; None = the full model is exchanged.
        """
        kwargs.setdefault("allow_numpy_conversion", False)
        super().__init__(model=None, source_ckpt_file_full_name=source_ckpt_file_full_name, **kwargs)
        self.model_name_or_path = model_name_or_path
        self.lora = lora
        self._resume_dir = None
        self._loaded = False
        self._refused = None

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
            if self.lora:
                try:
                    self.model = apply_lora(self.model, **self.lora, seed=LORA_INIT_SEED)
                except LoraTargetError as e:  # the job stops before any site trains
                    self.model, self._refused = None, f"server: {e}"
                    self.system_panic(self._refused, fl_ctx)

    def load_model(self, fl_ctx):
        if self._refused:
            return None
        ckpt = self.source_ckpt_file_full_name
        # NVFlare's own panic says only "cannot load model checkpoint": name the file and the way out. torch.save
        # writes a zip archive, so a truncated or foreign file is caught here without loading 500 MB twice.
        if ckpt and os.path.isabs(ckpt) and os.path.isfile(ckpt) and not zipfile.is_zipfile(ckpt):
            self.system_panic(
                f"initial checkpoint {ckpt} is corrupt or not a PyTorch checkpoint ({os.path.getsize(ckpt)} bytes, "
                "not a torch.save archive). Resume from an intact FL_global_model.pt (checkpoints/<job_id>/ on the "
                "server volume) or start from the pretrained weights (no --initial_ckpt)", fl_ctx)
            return None
        if self._loaded:  # the model object is gone (below): answer from the persistence manager
            return self.persistence_manager.to_model_learnable(self.exclude_vars)
        ml = super().load_model(fl_ctx)
        if ml is None:
            return None
        # Persist what travels: tied weights once (the sites re-tie them on load; a kept alias would hold its
        # initial, never-aggregated copy), and with LoRA the adapter only (the base stays the pretrained model).
        if self.model is not None:
            keep = set(exchanged_keys(self.model))
            for key in [k for k in self.persistence_manager.var_dict if k not in keep]:
                ml[ModelLearnableKey.WEIGHTS].pop(key, None)
                self.persistence_manager.var_dict.pop(key)
        train_conf = self.persistence_manager.train_conf = dict(self.persistence_manager.train_conf or {})
        if self.model is None and bool(train_conf.get("lora")) != bool(self.lora):  # started from a checkpoint
            held, wanted = ("a LoRA adapter", "full model") if train_conf.get("lora") else ("a full model", "LoRA")
            self.system_panic(f"initial checkpoint {self.source_ckpt_file_full_name} holds {held} but the job "
                              f"exchanges the {wanted}: generate the job with the LoRA settings the checkpoint "
                              "was trained with", fl_ctx)
            return None
        if self.lora:
            train_conf["lora"] = dict(self.lora)
        # From here on the global model lives in the persistence manager (and the workflow's FLModel); the HF
        # model object only held the initial weights, and kept alive it would pin them for the whole job: one
        # model copy of server memory (0.5 GB for the 124M GPT-2, 3 GB for gpt2-large) from round 2 on.
        self.model = None
        self._loaded = True
        return ml

    def save_model(self, ml, fl_ctx):
        self._get_persistence_manager(fl_ctx).update(ml)
        # NVFlare's atomic write; progress.json is replaced only after the weights are in place.
        checkpoint = os.path.join(self._resume_dir, self.global_model_file_name)
        self.save_model_file(checkpoint)
        # The app folder's copy (what the job's download holds) is the same bytes: link it rather than serialize
        # the model a second time every round (both live on the server's workspace volume).
        link = self._ckpt_save_path + ".link"
        try:
            if os.path.lexists(link):
                os.remove(link)
            os.link(checkpoint, link)
            os.replace(link, self._ckpt_save_path)
        except OSError:  # not one filesystem: write it
            self.save_model_file(self._ckpt_save_path)
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
