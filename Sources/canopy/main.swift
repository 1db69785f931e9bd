import CanopyCLI

await CanopyCommand.runMain()
