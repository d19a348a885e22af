"""Stand-in for SimpleITK on the GPU machine (its wheel, about 50 MB, does not fit the 64 MiB that travels).

nnU-Net and batchgeneratorsv2 import SimpleITK at module level but need it only to read and write images with
SimpleITKIO; the GPU check's data use NibabelIO. Any use of this stub fails loudly instead of misreading.
"""
HIPPO_PEFT_STUB = True


def __getattr__(name):
    if name.startswith("__"):  # probes by import machinery and introspection
        raise AttributeError(name)
    raise RuntimeError(f"SimpleITK.{name}: SimpleITK is not installed here (scripts/gpu_check.sh puts this stub in its "
                       f"place); read images with NibabelIO (dataset.json: overwrite_image_reader_writer).")
