from setuptools import find_packages, setup

setup(
    name="pymeta",
    version="0.1.0",
    description="Gradient-based meta-learning (FOMAML, Reptile, iMAML, MAML) on TensorFlow 2 / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pymeta", "pymeta.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "tensorboard",  # tf.summary needs it; recent TensorFlow wheels no longer bring it
        "numpy",
        "h5py",
        "pillow",
        "absl-py",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # the MPI tests run under mpiexec: the test extra brings mpi4py and an MPI runtime too
        "test": ["pytest>=7", "pytest-timeout", "hypothesis", "mpi4py>=3.1", "mpich"],
        "mpi": ["mpi4py>=3.1", "mpich"],
    },
)
