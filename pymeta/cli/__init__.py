"""The command-line programs: `pymeta-train` (`pymeta.cli.train`) and `pymeta-metatest`
(`pymeta.cli.metatest`). Their modules import TensorFlow only after the flags are parsed, so that
`--help` is fast and TensorFlow's start-up messages can be quieted first."""
