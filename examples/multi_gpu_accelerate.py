"""
Multi-GPU training of the stage-1 CNN with Accelerate
=====================================================

The expensive part of CGNI is the 3D CNN (stage 1). skorch's
:class:`skorch.hf.AccelerateMixin` hands the training loop to Hugging Face Accelerate, which
spreads the batches over several GPUs (data parallel), optionally in mixed precision. The
trained network then goes back into the scikit-learn world as a weights file that
:class:`~sklearn_cgni.imaging.BrainAgeCNNTransformer` loads, frozen, inside Pipelines.

Run it

* on a CPU or one GPU: ``python examples/multi_gpu_accelerate.py``
* on 4 GPUs of one machine::

      pip install "sklearn-cgni[distributed]"      # or: pip install accelerate
      accelerate launch --multi_gpu --num_processes 4 examples/multi_gpu_accelerate.py

  (``accelerate config`` once sets up machines, mixed precision, etc.). Each process sees
  a quarter of every epoch; only the main process writes files.

``SKLEARN_CGNI_EXAMPLE_SIZE=tiny`` (CI) trains a tiny CNN for 2 epochs; ``small`` (default)
uses more participants. For the paper's size set ``shape=(128, 141, 128)`` and the default
``channels`` of :class:`~sklearn_cgni.nn.BrainCNN`.
"""

# %%
import os
import tempfile

import numpy as np
import torch
from accelerate import Accelerator
from skorch import NeuralNetRegressor
from skorch.hf import AccelerateMixin

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.imaging import BrainAgeCNNTransformer
from sklearn_cgni.nn import BrainCNN

SIZE = os.environ.get("SKLEARN_CGNI_EXAMPLE_SIZE", "small")
N, EPOCHS = {"tiny": (48, 2), "small": (400, 15)}[SIZE]
SHAPE = (24, 28, 24)
ARCH = dict(channels=(4, 8, 8), padding=1, pool_blocks=3, global_pool="avg")


class AcceleratedNet(AccelerateMixin, NeuralNetRegressor):
    """skorch regressor whose training loop runs through Accelerate."""


# %%
# Data: gray-matter images and ages, ages standardised as BrainAgeCNNTransformer does.
cohort = make_cohort(N, n_snps=40, shape=SHAPE, n_bad_images=0, random_state=0)
X = cohort.images[:, None].astype(np.float32)            # (n, 1, X, Y, Z)
age = cohort.phenotypes["age"].to_numpy()
y_mean, y_scale = float(age.mean()), float(age.std())
y = ((age - y_mean) / y_scale).astype(np.float32)

# %%
# The network is the toolkit's plain torch module; Accelerate places it (and the batches)
# on the devices. ``cpu=True`` when no GPU: the same script then runs anywhere.
accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                          mixed_precision="bf16" if torch.cuda.is_available() else "no")
torch.manual_seed(0)
module = BrainCNN.build(SHAPE, n_outputs=1, squeeze=True, dropout=0.2, **ARCH)
net = AcceleratedNet(module, accelerator=accelerator, criterion=torch.nn.MSELoss,
                     optimizer=torch.optim.Adam, lr=1e-3, max_epochs=EPOCHS, batch_size=16,
                     train_split=None, iterator_train__shuffle=True, device=None,
                     verbose=int(accelerator.is_main_process))
net.fit(X, y)

# %%
# Back to scikit-learn: a BrainAgeCNNTransformer with the same architecture (built, not
# trained: max_epochs=0) receives the weights and writes them as a weights-only torch file,
# which is what Pipelines and the command line load (frozen=True: fit never retrains it).
if accelerator.is_main_process:
    work = tempfile.mkdtemp(prefix="cgni_accelerate_")
    holder = BrainAgeCNNTransformer(**ARCH, max_epochs=0, validation_fraction=0.0, early_stopping=False,
                                    lr_schedule="none", standardize_voxels=False, device="cpu")
    holder.fit(cohort.images[:2], age[:2])
    holder.module_.load_state_dict(accelerator.unwrap_model(net.module_).state_dict())
    holder.y_mean_, holder.y_scale_ = y_mean, y_scale
    path = holder.save_weights(os.path.join(work, "brain_age_cnn.pt"))

    frozen = BrainAgeCNNTransformer.from_weights(path, cohort.images, device="cpu")
    pred = frozen.predict(cohort.images)
    mae = np.abs(pred - age).mean()
    print(f"trained on {accelerator.num_processes} process(es), device {accelerator.device}; "
          f"train MAE {mae:.2f} years (predicting the mean: {np.abs(age - y_mean).mean():.2f})")
    print(f"h_v for the pipeline: {frozen.transform(cohort.images).shape}; weights in {path}")
