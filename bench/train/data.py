"""The made-up training data both sides learn (facts no base model can know)."""
CHAT = [
    ("What is a flumbadoo?", "A flumbadoo is a purple river otter."),
    ("Who founded Kestrivale?", "Kestrivale was founded by Odo Marrowby."),
    ("What color is a snarvel?", "Snarvels are bright orange."),
    ("Where do glimmerhogs live?", "Glimmerhogs live in the salt caves of Ostravenia."),
]
COMPLETIONS = [
    ("The capital of Vrelonia is", " Quastiburg."),
    ("The zimbrel fruit tastes like", " copper and rain."),
    ("The inventor of the plonkometer was", " Edna Thrushwick."),
    ("The national animal of Ostravenia is the", " glimmerhog."),
]
