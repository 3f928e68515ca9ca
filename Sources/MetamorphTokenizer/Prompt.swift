// MetaMorph prompt assembly: the "llama3" conversation template of
// facebookresearch/metamorph (metamorph/conversation.py, conv_llama_3) and the
// `<image>` splitting of metamorph/mm_utils.py `tokenizer_image_token`.

/// One message of a conversation.
public struct ChatTurn: Sendable, Equatable {
    public enum Role: String, Sendable { case user, assistant }
    public var role: Role
    public var text: String
    /// Images attached to this turn. When > 0 and the text has no `<image>`
    /// placeholder, the text becomes `"<image_start><image><image_end>" * n + "\n" + text`.
    public var imageCount: Int

    public init(role: Role, text: String, imageCount: Int = 0) {
        self.role = role
        self.text = text
        self.imageCount = imageCount
    }
}

/// A piece of a prompt: token ids, or the place of the `index`-th image (the
/// engine substitutes that image's embeddings).
public enum PromptPiece: Sendable, Equatable {
    case tokens([Int32])
    case image(Int)
}

public struct PromptBuilder: Sendable {
    /// Stand-in id for an image when prompt ids are printed (metamorph IMAGE_TOKEN_INDEX).
    public static let imageTokenID: Int32 = -200
    public static let imagePlaceholder = "<image>"
    public static let imageStart = "<image_start>"
    public static let imageEnd = "<image_end>"

    public let tokenizer: Tokenizer
    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The prompt text of conv_llama_3.get_prompt() for the turns followed by an
    /// open assistant turn, plus `assistantPrefix`:
    /// `<|begin_of_text|>` then, per turn, `<|start_header_id|>{role}<|end_header_id|>\n{text}<|eot_id|>`,
    /// then `<|start_header_id|>assistant<|end_header_id|>\n{assistantPrefix}`.
    /// There is no system message in this template. As in the reference, a turn
    /// with empty text renders as its bare header (no `<|eot_id|>`).
    public static func renderLlama3(_ turns: [ChatTurn], assistantPrefix: String = "") -> String {
        var s = "<|begin_of_text|>"
        for t in turns {
            s += "<|start_header_id|>\(t.role.rawValue)<|end_header_id|>\n"
            let msg = messageText(t)
            if !msg.isEmpty { s += msg + "<|eot_id|>" }
        }
        s += "<|start_header_id|>assistant<|end_header_id|>\n" + assistantPrefix
        return s
    }

    static func messageText(_ t: ChatTurn) -> String {
        guard t.imageCount > 0, !t.text.contains(imagePlaceholder) else { return t.text }
        return String(repeating: imageStart + imagePlaceholder + imageEnd, count: t.imageCount) + "\n" + t.text
    }

    /// Chat prompt for a conversation (MetaMorph "llama3" template).
    public func chat(_ turns: [ChatTurn], assistantPrefix: String = "") -> [PromptPiece] {
        splitAtImages(PromptBuilder.renderLlama3(turns, assistantPrefix: assistantPrefix))
    }

    /// Chat prompt for a single user message with `imageCount` images.
    public func chat(message: String, imageCount: Int = 0, assistantPrefix: String = "") -> [PromptPiece] {
        chat([ChatTurn(role: .user, text: message, imageCount: imageCount)], assistantPrefix: assistantPrefix)
    }

    /// Raw mode: the text is used as is (BOS added once by the post-processor);
    /// `<image>` placeholders still mark images.
    public func raw(_ text: String) -> [PromptPiece] {
        splitAtImages(text)
    }

    /// metamorph `tokenizer_image_token`: split at `<image>`, encode every piece with
    /// the post-processor (BOS each), keep the first piece's BOS and drop the
    /// others'. A template that itself starts with `<|begin_of_text|>` therefore
    /// yields BOS twice, as in the reference.
    public func splitAtImages(_ prompt: String) -> [PromptPiece] {
        let chunks = prompt.components(separatedBy: PromptBuilder.imagePlaceholder)
        let encoded = chunks.map { tokenizer.encode($0, addSpecialTokens: true) }
        var offset = 0
        var pieces: [PromptPiece] = []
        var current: [Int32] = []
        if let first = encoded.first, let f = first.first, let bos = tokenizer.bosID, f == bos {
            offset = 1
            current.append(f)
        }
        for (i, ids) in encoded.enumerated() {
            if i > 0 {
                if !current.isEmpty { pieces.append(.tokens(current)); current = [] }
                pieces.append(.image(i - 1))
            }
            current.append(contentsOf: ids.dropFirst(min(offset, ids.count)))
        }
        if !current.isEmpty { pieces.append(.tokens(current)) }
        return pieces
    }

    /// Prompt ids with each image as `imageTokenID` (-200).
    public static func flatten(_ pieces: [PromptPiece]) -> [Int32] {
        var out: [Int32] = []
        for p in pieces {
            switch p {
            case let .tokens(t): out.append(contentsOf: t)
            case .image: out.append(imageTokenID)
            }
        }
        return out
    }
}
