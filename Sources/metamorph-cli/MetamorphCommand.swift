// The `metamorph` command line. Subcommands live one per file.
import ArgumentParser

@main
struct MetamorphCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metamorph",
        abstract: "MetaMorph inference on the CPU: text, images in, visual tokens out.",
        subcommands: [RunCommand.self, TokenizeCommand.self, RenderCommand.self, BenchCommand.self])
}
