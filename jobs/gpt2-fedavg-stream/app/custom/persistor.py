"""Server-side model persistor that starts FL from the *pretrained* weights.

NVFlare's PTFileModelPersistor builds the model from class + config, i.e. random weights, unless a checkpoint
file is given. Shipping a 500 MB checkpoint inside the job is not an option, so the server loads the same
pretrained model the sites load (hub name or local folder) and persists the global model every round.
"""

from nvflare.app_opt.pt.file_model_persistor import PTFileModelPersistor

from model import load_model


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

    def _initialize(self, fl_ctx):
        super()._initialize(fl_ctx)
        if not self.source_ckpt_file_full_name:
            self.log_info(fl_ctx, f"initial global model: pretrained weights of {self.model_name_or_path!r}")
            self.model = load_model(self.model_name_or_path)
