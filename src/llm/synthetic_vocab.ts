/**
 * A SentencePiece-style (llama "SPM") vocabulary for generated models: unknown and
 * control tokens, all 256 byte tokens, printable characters, and common English and
 * code words with every intermediate piece (SPM merges pair by pair, so "▁the" is only
 * produced when "▁t" and "▁th" exist too).
 */

/** Token types of `tokenizer.ggml.token_type`. */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, byte: 6 } as const;

/** A vocabulary ready to be written. */
export interface Vocab {
  tokens: string[];
  scores: number[];
  types: number[];
  bos: number;
  eos: number;
  unk: number;
}

const WORDS = `the of and to a in is it you that he was for on are with as I his they be at one
have this from or had by hot word but what some we can out other were all there when up use
your how said an each she which do their time if will way about many then them write would
like so these her long make thing see him two has look more day could go come did number
sound no most people my over know water than call first who may down side been now find any
new work part take get place made live where after back little only round man year came show
every good me give our under name very through just form sentence great think say help low
line differ turn cause much mean before move right boy old too same tell does set three want
air well also play small end put home read hand port large spell add even land here must big
high such follow act why ask men change went light kind off need house picture try us again
animal point mother world near build self earth father head stand own page should country
found answer school grow study still learn plant cover food sun four between state keep eye
never last let thought city tree cross farm hard start might story saw far sea draw left late
run while press close night real life few north open seem together next white children begin
got walk example ease paper group always music those both mark often letter until mile river
car feet care second book carry took science eat room friend began idea fish mountain stop
once base hear horse cut sure watch color face wood main enough plain girl usual young ready
above ever red list though feel talk bird soon body dog family direct pose leave song measure
door product black short numeral class wind question happen complete ship area half rock
order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast verb
sing listen six table travel less morning ten simple several vowel toward war lay against
pattern slow center love person money serve appear road map rain rule govern pull cold notice
voice unit power town fine certain fly fall lead cry dark machine note wait plan figure star
box noun field rest correct able pound done beauty drive stood contain front teach week final
gave green oh quick develop ocean warm free minute strong special mind behind clear tail
produce fact street inch multiply nothing course stay wheel full force blue object decide
surface deep moon island foot system busy test record boat common gold possible plane stead
dry wonder laugh thousand ago ran check game shape equate miss brought heat snow tire bring
yes distant fill east paint language among hello world model token stream server client
function return const let var import export async await class interface type string number
boolean true false null undefined if else for while new this error data file path json text
value key list map set get put post request response socket daemon terminal session
generate cancel prompt message user assistant system please thank thanks today tomorrow
quickly brown fox jumps lazy`;

const SUFFIXES = ["s", "es", "ed", "ing", "er", "ly", "tion", "ment", "ness", "able"];

/** The SPM word boundary marker. */
export const SPACE = "\u2581";

/**
 * Builds the vocabulary: control tokens, 256 byte tokens, printable ASCII, and every
 * prefix of each common word (with and without the leading "▁") plus common suffixes.
 * Token strings are unique (duplicates abort llama.cpp).
 */
export function buildVocab(extraControl: readonly string[] = []): Vocab {
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  const seen = new Set<string>();
  const add = (text: string, type: number, score: number) => {
    if (seen.has(text)) return;
    seen.add(text);
    tokens.push(text);
    scores.push(score);
    types.push(type);
  };
  add("<unk>", TOKEN_TYPE.unknown, 0);
  add("<s>", TOKEN_TYPE.control, 0);
  add("</s>", TOKEN_TYPE.control, 0);
  for (const c of extraControl) add(c, TOKEN_TYPE.control, 0);
  for (let b = 0; b < 256; b++) {
    add(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`, TOKEN_TYPE.byte, 0);
  }
  // Single characters first, then longer pieces; a higher score merges first.
  add(SPACE, TOKEN_TYPE.normal, -1);
  for (let c = 0x21; c < 0x7f; c++) add(String.fromCharCode(c), TOKEN_TYPE.normal, -1);
  const pieces = new Set<string>();
  const words = [...new Set(WORDS.split(/\s+/).filter(Boolean))];
  const addChain = (w: string) => {
    for (let i = 2; i <= w.length; i++) pieces.add(w.slice(0, i));
  };
  for (const w of words) {
    addChain(SPACE + w);
    addChain(w);
    const cap = w[0].toUpperCase() + w.slice(1);
    addChain(SPACE + cap);
  }
  for (const s of SUFFIXES) addChain(s);
  addChain(SPACE.repeat(8));
  for (const p of [...pieces].sort((a, b) => a.length - b.length || (a < b ? -1 : 1))) {
    add(p, TOKEN_TYPE.normal, -2 - p.length * 0.001);
  }
  return { tokens, scores, types, bos: 1, eos: 2, unk: 0 };
}
