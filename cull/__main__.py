from cull.cli import app

app(prog_name="cull")
