"""The service's side of the sandbox: what runs on the host, never inside a jail.

The jail's own code (:mod:`sandbox.jail`) imports only the standard library;
everything here may use third-party packages (pyseccomp) and the service's
settings: compiling the seccomp filter, managing run cgroups, probing the
layers, pinning locks, and the runner that arms and collects jails.
"""
