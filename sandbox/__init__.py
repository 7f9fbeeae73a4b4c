"""The PAGI tool sandbox: runs each tool in a layered, verified jail."""
