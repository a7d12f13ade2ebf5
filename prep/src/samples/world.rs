//! A made-up world for the demo samples: invented people, towns, appliances, dishes and animals,
//! each with three facts. Every fact is rendered into exactly one sample record, so holding out a
//! query holds out a fact the model has never seen: it can only answer it by matching the names
//! and relation words of query and answer, which is what training has to teach.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One relation: how questions about it are asked and how answers state it. `{e}` is the
/// entity, `{v}` the value. Several phrasings each, so template words carry no identity.
pub struct Relation {
    pub questions: &'static [&'static str],
    pub answers: &'static [&'static str],
    /// Search-engine style query (MS MARCO, PAQ).
    pub keywords: &'static [&'static str],
    /// A sentence asking about it at more length (Yahoo content, Stack Exchange bodies).
    pub details: &'static [&'static str],
}

/// Draws a value (or a name) from the world's seeded stream.
type Gen = fn(&mut ChaCha8Rng) -> String;

pub struct Kind {
    pub name: &'static str,
    pub relations: [(Relation, Gen); 3],
}

#[derive(Clone)]
pub struct Fact {
    pub kind: &'static str,
    pub entity: String,
    pub relation: &'static Relation,
    pub value: String,
}

impl Fact {
    pub fn fill(&self, template: &str) -> String {
        let text = template
            .replace("{e}", &self.entity)
            .replace("{v}", &self.value);
        upper_first(&text)
    }
    pub fn question(&self, rng: &mut ChaCha8Rng) -> String {
        self.fill(self.relation.questions.choose(rng).expect("templates"))
    }
    /// `n` distinct phrasings of the question (duplicate-question sources).
    pub fn questions(&self, rng: &mut ChaCha8Rng, n: usize) -> Vec<String> {
        let mut t: Vec<&&str> = self.relation.questions.iter().collect();
        t.shuffle(rng);
        t.into_iter().take(n).map(|t| self.fill(t)).collect()
    }
    pub fn answer(&self, rng: &mut ChaCha8Rng) -> String {
        self.fill(self.relation.answers.choose(rng).expect("templates"))
    }
    pub fn keywords(&self, rng: &mut ChaCha8Rng) -> String {
        self.fill(self.relation.keywords.choose(rng).expect("templates"))
            .to_lowercase()
    }
    pub fn detail(&self, rng: &mut ChaCha8Rng) -> String {
        self.fill(self.relation.details.choose(rng).expect("templates"))
    }
}

pub fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ren", "tu", "va", "sho", "bel", "dri", "nor", "fa", "zi", "quen", "ol",
    "mar", "the", "pa", "ris", "gu", "len", "ost", "ya", "dor", "vik", "sel", "an", "bru", "cor",
    "em", "hal", "ith", "jor", "kes", "lum", "nav", "pel", "rut", "sim", "tor", "wen",
];

fn word(rng: &mut ChaCha8Rng, syllables: usize) -> String {
    let w: String = (0..syllables)
        .map(|_| *SYLLABLES.choose(rng).expect("syllables"))
        .collect();
    upper_first(&w)
}

fn pick(rng: &mut ChaCha8Rng, values: &[&str]) -> String {
    values.choose(rng).expect("values").to_string()
}

const COUNTRIES: &[&str] = &[
    "Norvalia", "Estrend", "Kolmar", "Tessaly", "Brunholt", "Avaran", "Dremont", "Solvik",
];

fn town(rng: &mut ChaCha8Rng) -> String {
    word(rng, 3)
}

static PERSON: Kind = Kind {
    name: "person",
    relations: [
        (
            Relation {
                questions: &[
                    "Where was {e} born?",
                    "In which town was {e} born?",
                    "What is the birthplace of {e}?",
                    "Which town does {e} come from originally?",
                    "where did {e} grow up as a child?",
                ],
                answers: &[
                    "{e} was born in {v} and spent a happy childhood there.",
                    "{v} is the hometown of {e}; the family lived near the old market.",
                    "Born in {v}, {e} only moved away after finishing school.",
                    "According to the parish records, {e} was born in the town of {v}.",
                ],
                keywords: &["{e} birthplace", "where born {e}", "{e} hometown"],
                details: &[
                    "I keep reading about {e} but nobody says where {e} was born.",
                    "My teacher mentioned {e} today. Which town was that person born in?",
                ],
            },
            town,
        ),
        (
            Relation {
                questions: &[
                    "What does {e} do for a living?",
                    "What is the profession of {e}?",
                    "What job does {e} have?",
                    "how does {e} earn a living?",
                    "What kind of work is {e} known for?",
                ],
                answers: &[
                    "{e} works as a {v} and has done so for many years.",
                    "By profession {e} is a {v}.",
                    "{e} trained as a {v} and still works in that job today.",
                    "Most people know {e} as a {v} with a busy schedule.",
                ],
                keywords: &["{e} job", "{e} profession", "what does {e} do"],
                details: &[
                    "A friend told me about {e}. What is that person's job?",
                    "I met {e} at a party and forgot to ask about work. What does {e} do?",
                ],
            },
            |r| {
                pick(
                    r,
                    &[
                        "baker",
                        "pilot",
                        "surgeon",
                        "carpenter",
                        "architect",
                        "librarian",
                        "chemist",
                        "farmer",
                        "journalist",
                        "firefighter",
                        "lawyer",
                        "painter",
                        "sailor",
                        "teacher",
                        "plumber",
                        "dentist",
                    ],
                )
            },
        ),
        (
            Relation {
                questions: &[
                    "What is the favourite hobby of {e}?",
                    "What does {e} do in their free time?",
                    "Which pastime does {e} enjoy most?",
                    "how does {e} spend the weekends?",
                ],
                answers: &[
                    "In spare time {e} enjoys {v} more than anything else.",
                    "{e} spends most weekends on {v}.",
                    "The great passion of {e} outside work is {v}.",
                    "When not working, {e} can usually be found doing {v}.",
                ],
                keywords: &["{e} hobby", "{e} free time", "{e} pastime"],
                details: &[
                    "I am writing a profile of {e}. What hobbies does {e} have?",
                    "Does anyone know what {e} likes to do for fun?",
                ],
            },
            |r| {
                pick(
                    r,
                    &[
                        "chess",
                        "archery",
                        "rowing",
                        "playing the cello",
                        "pottery",
                        "kite flying",
                        "birdwatching",
                        "fencing",
                        "juggling",
                        "knitting",
                        "rock climbing",
                        "gardening",
                    ],
                )
            },
        ),
    ],
};

static TOWN: Kind = Kind {
    name: "town",
    relations: [
        (
            Relation {
                questions: &[
                    "Which country is {e} in?",
                    "In what country is the town of {e}?",
                    "What country does {e} belong to?",
                    "where is {e} located?",
                ],
                answers: &[
                    "{e} is a town in {v}, close to the northern border.",
                    "The town of {e} lies in {v}.",
                    "{e} belongs to {v} and is one of its older towns.",
                    "You will find {e} in {v}, about a day's drive from the capital.",
                ],
                keywords: &["{e} country", "where is {e}", "{e} location"],
                details: &[
                    "I saw {e} on a postcard. Which country is that town in?",
                    "Planning a trip and {e} came up. What country is it in?",
                ],
            },
            |r| pick(r, COUNTRIES),
        ),
        (
            Relation {
                questions: &[
                    "Which river flows through {e}?",
                    "What is the name of the river in {e}?",
                    "What river runs through the town of {e}?",
                    "is there a river in {e}?",
                ],
                answers: &[
                    "The {v} river flows right through the centre of {e}.",
                    "{e} was built on the banks of the {v} river.",
                    "The river in {e} is the {v}, crossed by three stone bridges.",
                    "{e} sits where the {v} river bends to the east.",
                ],
                keywords: &["{e} river", "river through {e}", "{e} river name"],
                details: &[
                    "There is a river in the old photos of {e}. What is it called?",
                    "I want to go fishing near {e}. Which river is there?",
                ],
            },
            |r| word(r, 2),
        ),
        (
            Relation {
                questions: &[
                    "What is {e} famous for?",
                    "What is the town of {e} known for?",
                    "Why do people visit {e}?",
                    "what product is {e} best known for?",
                ],
                answers: &[
                    "{e} is famous for its {v}, sold all over the region.",
                    "Visitors come to {e} mainly for the {v}.",
                    "The town of {e} has been known for {v} for centuries.",
                    "Ask anyone about {e} and they will mention its {v}.",
                ],
                keywords: &["{e} famous for", "{e} known for", "why visit {e}"],
                details: &[
                    "Everyone says {e} is famous for something. What is it?",
                    "I am visiting {e} next month. What is the town known for?",
                ],
            },
            |r| {
                pick(
                    r,
                    &[
                        "cheese",
                        "glassware",
                        "wool",
                        "clocks",
                        "olive oil",
                        "shipbuilding",
                        "silk",
                        "paper mills",
                        "church bells",
                        "honey",
                        "pottery",
                        "cider",
                    ],
                )
            },
        ),
    ],
};

static APPLIANCE: Kind = Kind {
    name: "appliance",
    relations: [
        (
            Relation {
                questions: &[
                    "What is the {e} made of?",
                    "What material is the {e} made from?",
                    "Is the body of the {e} metal or plastic?",
                    "what is the housing of the {e} made out of?",
                ],
                answers: &[
                    "The {e} has a body made of {v}.",
                    "Mine is the {e}; the whole housing is {v}.",
                    "The {e} is built from {v}, which feels solid.",
                    "It is {v}. The maker lists {v} as the material of the {e}.",
                ],
                keywords: &["{e} material", "{e} made of", "{e} housing"],
                details: &[
                    "I am thinking of buying the {e}. What is it made of?",
                    "Does anyone know the material of the {e}?",
                ],
            },
            |r| {
                pick(
                    r,
                    &[
                        "stainless steel",
                        "glass",
                        "bamboo",
                        "copper",
                        "ceramic",
                        "brushed aluminium",
                        "hard plastic",
                        "oak wood",
                    ],
                )
            },
        ),
        (
            Relation {
                questions: &[
                    "How much does the {e} cost?",
                    "What is the price of the {e}?",
                    "Is the {e} expensive?",
                    "how much did you pay for the {e}?",
                ],
                answers: &[
                    "The {e} costs {v} dollars in most shops.",
                    "I paid {v} dollars for the {e}.",
                    "The price of the {e} is {v} dollars, sometimes less on sale.",
                    "Expect to pay about {v} dollars for the {e}.",
                ],
                keywords: &["{e} price", "{e} cost", "how much {e}"],
                details: &[
                    "I need a new one and the {e} looks good. How much is it?",
                    "What should I expect to pay for the {e}?",
                ],
            },
            |r| r.random_range(12..400).to_string(),
        ),
        (
            Relation {
                questions: &[
                    "How long is the warranty on the {e}?",
                    "Does the {e} come with a warranty?",
                    "How many years of warranty does the {e} have?",
                    "what warranty comes with the {e}?",
                ],
                answers: &[
                    "The {e} comes with a {v} year warranty.",
                    "Warranty on the {e} is {v} years from the date of purchase.",
                    "You get {v} years of warranty with the {e}.",
                    "The maker covers the {e} for {v} years.",
                ],
                keywords: &["{e} warranty", "{e} guarantee years", "warranty {e}"],
                details: &[
                    "Before I buy the {e}, how long is it covered?",
                    "My {e} stopped working. Is it still under warranty?",
                ],
            },
            |r| r.random_range(1..8).to_string(),
        ),
    ],
};

static DISH: Kind = Kind {
    name: "dish",
    relations: [
        (
            Relation {
                questions: &[
                    "What is the main ingredient of {e}?",
                    "What is {e} made with?",
                    "Which ingredient do you need most for {e}?",
                    "what goes into {e}?",
                ],
                answers: &[
                    "The main ingredient of {e} is {v}.",
                    "{e} is made mostly with {v}, plus a little salt.",
                    "You cannot make {e} without plenty of {v}.",
                    "Traditional {e} is built around {v}.",
                ],
                keywords: &[
                    "{e} ingredient",
                    "{e} recipe main ingredient",
                    "{e} made with",
                ],
                details: &[
                    "I tasted {e} at a friend's house. What is it made from?",
                    "I want to cook {e} tonight. What do I need?",
                ],
            },
            |r| {
                pick(
                    r,
                    &[
                        "lentils",
                        "pumpkin",
                        "lamb",
                        "rice",
                        "mushrooms",
                        "salmon",
                        "chickpeas",
                        "spinach",
                        "beetroot",
                        "duck",
                        "potatoes",
                        "cabbage",
                    ],
                )
            },
        ),
        (
            Relation {
                questions: &[
                    "How long does {e} take to cook?",
                    "What is the cooking time for {e}?",
                    "How many minutes should I cook {e}?",
                    "how long to cook {e}?",
                ],
                answers: &[
                    "{e} needs about {v} minutes of cooking.",
                    "Cook {e} for {v} minutes and let it rest.",
                    "Plan for {v} minutes; {e} should not be rushed.",
                    "{e} is ready after roughly {v} minutes on a low heat.",
                ],
                keywords: &["{e} cooking time", "how long cook {e}", "{e} minutes"],
                details: &[
                    "I have guests coming and want to make {e}. How long will it take?",
                    "My {e} always comes out undercooked. How long should it cook?",
                ],
            },
            |r| (r.random_range(3..36) * 5).to_string(),
        ),
        (
            Relation {
                questions: &[
                    "Where does {e} come from?",
                    "Which country is {e} from?",
                    "What is the origin of {e}?",
                    "in which country was {e} first cooked?",
                ],
                answers: &[
                    "{e} comes from {v}, where it is eaten at festivals.",
                    "{e} is a traditional dish of {v}.",
                    "The recipe for {e} was first written down in {v}.",
                    "Cooks in {v} have made {e} for generations.",
                ],
                keywords: &["{e} origin", "{e} country", "where is {e} from"],
                details: &[
                    "A restaurant near me serves {e}. Where does the dish come from?",
                    "Is {e} a local dish or from abroad? Which country?",
                ],
            },
            |r| pick(r, COUNTRIES),
        ),
    ],
};

static ANIMAL: Kind = Kind {
    name: "animal",
    relations: [
        (
            Relation {
                questions: &[
                    "Where does the {e} live?",
                    "What is the habitat of the {e}?",
                    "In what kind of place can you find the {e}?",
                    "where do {e}s live in the wild?",
                ],
                answers: &[
                    "The {e} lives in {v}.",
                    "You can find the {e} in {v}, usually in small groups.",
                    "The natural habitat of the {e} is {v}.",
                    "{e}s make their homes in {v}.",
                ],
                keywords: &["{e} habitat", "where {e} live", "{e} range"],
                details: &[
                    "I saw a picture of the {e}. Where does it live?",
                    "Could I spot the {e} on a hike? What habitat does it need?",
                ],
            },
            |r| {
                pick(
                    r,
                    &[
                        "mangrove swamps",
                        "alpine meadows",
                        "desert canyons",
                        "pine forests",
                        "coral reefs",
                        "river deltas",
                        "salt marshes",
                        "bamboo thickets",
                    ],
                )
            },
        ),
        (
            Relation {
                questions: &[
                    "What does the {e} eat?",
                    "What is the diet of the {e}?",
                    "What food does the {e} hunt or gather?",
                    "what do {e}s feed on?",
                ],
                answers: &[
                    "The {e} feeds mainly on {v}.",
                    "Its diet is simple: the {e} eats {v}.",
                    "{e}s survive almost entirely on {v}.",
                    "In the wild the {e} eats {v}, and little else.",
                ],
                keywords: &["{e} diet", "what {e} eat", "{e} food"],
                details: &[
                    "I want to keep a {e} at the zoo. What should it be fed?",
                    "What does the {e} eat? My book does not say.",
                ],
            },
            |r| {
                pick(
                    r,
                    &[
                        "beetles",
                        "seeds",
                        "small fish",
                        "ripe fruit",
                        "leaves",
                        "snails",
                        "flower nectar",
                        "algae",
                    ],
                )
            },
        ),
        (
            Relation {
                questions: &[
                    "How long does the {e} live?",
                    "What is the lifespan of the {e}?",
                    "How many years can a {e} live?",
                    "how old can {e}s get?",
                ],
                answers: &[
                    "The {e} lives for about {v} years.",
                    "A healthy {e} can reach {v} years of age.",
                    "{e}s have a lifespan of roughly {v} years.",
                    "Most {e}s live {v} years in the wild.",
                ],
                keywords: &["{e} lifespan", "{e} age years", "how long {e} live"],
                details: &[
                    "My child asked how long the {e} lives. Does anyone know?",
                    "Is the {e} long-lived? How many years?",
                ],
            },
            |r| r.random_range(2..45).to_string(),
        ),
    ],
};

/// (kind, how many entities, how an entity is named).
fn kinds() -> [(&'static Kind, usize, Gen); 5] {
    [
        (&PERSON, 45, |r| format!("{} {}", word(r, 2), word(r, 3))),
        (&TOWN, 25, |r| word(r, 3)),
        (&APPLIANCE, 35, |r| {
            let kind = pick(
                r,
                &[
                    "kettle",
                    "toaster",
                    "blender",
                    "fan heater",
                    "rice cooker",
                    "coffee grinder",
                    "dehumidifier",
                    "juicer",
                ],
            );
            format!(
                "{} {}{} {kind}",
                word(r, 2),
                pick(r, &["K", "T", "X", "Z"]),
                r.random_range(2..99)
            )
        }),
        (&DISH, 25, |r| {
            let dish = pick(
                r,
                &["stew", "pie", "dumplings", "soup", "flatbread", "curry"],
            );
            format!("{} {dish}", word(r, 2))
        }),
        (&ANIMAL, 25, |r| {
            let animal = pick(
                r,
                &["heron", "beetle", "otter", "lizard", "moth", "tortoise"],
            );
            format!("{} {animal}", word(r, 2))
        }),
    ]
}

/// Every fact of the world, shuffled by `rng`. Entity names are distinct across all kinds.
pub fn facts(rng: &mut ChaCha8Rng) -> Vec<Fact> {
    let mut names = std::collections::HashSet::new();
    let mut facts = Vec::new();
    for (kind, count, name) in kinds() {
        for _ in 0..count {
            let entity = loop {
                let n = name(rng);
                if names.insert(n.to_lowercase()) {
                    break n;
                }
            };
            for (relation, value) in &kind.relations {
                facts.push(Fact {
                    kind: kind.name,
                    entity: entity.clone(),
                    relation,
                    value: value(rng),
                });
            }
        }
    }
    facts.shuffle(rng);
    facts
}
