"""Built-in pipeline stages: train, evaluate, export and restore, each run by `bfcnn run` for its config section.

Functions and section schemas are named as "module:attribute" strings, imported only when a config is checked
or a stage runs, so that listing the stages (and `bfcnn --help`) imports no torch.
"""

from bfcnn.registry import hookimpl, ref

# what a config that trains and leaves out its noise or loss gets: the paper's blind training (Gaussian noise of
# every sigma in [0, 55] on the 0..255 scale) and the mean squared error
TRAIN_DEFAULTS = {"noise": {"type": "additive_gaussian", "sigma_range": [0, 55]}, "loss": {"type": "mse"}}

EXPORT_SCHEMA = {"type": "array", "items": ref("exporter"),
                 "description": "exporters run on the trained model (onnx, tflite, ...)"}


@hookimpl
def register_stages(register):
    register("train", "bfcnn.train:train", "bfcnn.train:TRAIN_SCHEMA",
             "train the model of the config's model, noise, dataset and loss sections",
             prepare="bfcnn.train:prepare", every_rank=True, defaults=TRAIN_DEFAULTS)
    register("evaluate", "bfcnn.evaluate:evaluate", "bfcnn.evaluate:EVALUATE_SCHEMA",
             "PSNR/SSIM of the run's model on test sets, tables and a plot", prepare="bfcnn.evaluate:check_inputs")
    register("export", "bfcnn.export:export", EXPORT_SCHEMA, "export the trained model (TFLite, ONNX)",
             prepare="bfcnn.export:prepare")
    register("restore", "bfcnn.restore:restore_stage", "bfcnn.restore:RESTORE_SCHEMA",
             "restore test images from measurements with the run's model as prior (PSNR table)",
             prepare="bfcnn.restore:check_stage_inputs")
