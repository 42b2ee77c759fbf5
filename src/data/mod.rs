//! Datasets: the built-in MNIST digits, MNIST IDX files, CIFAR-10 binary batches, image folders.
