"""Controllers of the embedded lab: loops that make the stored state true, as kube-controller-manager's do."""
