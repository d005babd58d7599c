"""qkv: transformers and diffusion models built from the attention head up.

    import qkv
    run = qkv.load_run("runs/shakespeare")     # any run directory; its task gives the inference calls
    print(run.generate("ROMEO:"))
"""


def __getattr__(name: str):
    if name == "__version__":  # computed on use: `import qkv` reads no metadata
        from qkv.version import version

        return version()
    raise AttributeError(f"module 'qkv' has no attribute {name!r}")


def load_run(path, device: str = "cpu", **options):
    """A trained run, loaded for inference (`qkv.tasks.load_run`)."""
    from qkv.tasks import load_run as _load_run  # imported on use: `import qkv` stays light

    return _load_run(path, device=device, **options)


__all__ = ["__version__", "load_run"]
