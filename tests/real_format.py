"""Small datasets in the real on-disk formats, for tests: cnnlab's own stand-in writers (``cnnlab.standin_data``,
which ``cnnlab recipes validate`` uses), at the sizes the tests need — a few dozen images, so each test stays fast."""

from __future__ import annotations

from functools import partial

from cnnlab import standin_data

write_mnist = partial(standin_data.write_mnist, n_train=60, n_test=20)
write_cifar10 = partial(standin_data.write_cifar10, per_batch=10, n_test=20)
write_cifar100 = partial(standin_data.write_cifar100, n_train=200, n_test=100)
write_svhn = partial(standin_data.write_svhn, n_train=50, n_test=20)
write_image_folder = standin_data.write_image_folder
