"""qkv: transformers and diffusion models built from the attention head up.

    import qkv
    run = qkv.load_run("runs/shakespeare")     # any run directory; its task gives the inference calls
    print(run.generate("ROMEO:"))
"""


def load_run(path, device: str = "cpu", **options):
    """A trained run, loaded for inference (`qkv.tasks.load_run`)."""
    from qkv.tasks import load_run as _load_run  # imported on use: `import qkv` stays light

    return _load_run(path, device=device, **options)


__all__ = ["load_run"]
