"""Fact tables and the generator of the shipped knowledge-conflict sets.

The package's authors wrote these tables from public, well-known facts
(capitals, birthplaces, famous proverbs...). :func:`build_all` turns them into
``CF_World_Facts.jsonl``, ``CF_Bio.jsonl`` and ``CF_Quotes.jsonl`` in
``fullscale/data/`` deterministically (fixed seed): run

    python -m fullscale.conflict_sources [OUT_DIR]

Each counterfactual answer is a real entity of the same type as the true one
(another city of the same country, another river, another nationality...),
never the true answer, and every generated item passes
:func:`fullscale.conflicts.validate_items` (the build refuses to write
otherwise). Bump :data:`VERSION` whenever the items change.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Sequence

from fullscale.conflicts import ConflictItem, contains_word, find_word_spans, items_to_jsonl, validate_items

VERSION = "1.0"
SEED = 20250101

# ============================================================== CF_World_Facts
# (country as used in a sentence, true capital, aliases of the capital, other major cities of that country)
CAPITALS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    # Europe
    ("France", "Paris", (), ("Lyon", "Marseille")),
    ("Germany", "Berlin", (), ("Munich", "Hamburg")),
    ("Italy", "Rome", ("Roma",), ("Milan", "Naples")),
    ("Spain", "Madrid", (), ("Barcelona", "Seville")),
    ("Portugal", "Lisbon", ("Lisboa",), ("Porto", "Braga")),
    ("the United Kingdom", "London", (), ("Manchester", "Birmingham")),
    ("Ireland", "Dublin", (), ("Galway", "Waterford")),
    ("Belgium", "Brussels", (), ("Antwerp", "Ghent")),
    ("the Netherlands", "Amsterdam", (), ("Rotterdam", "Utrecht")),
    ("Switzerland", "Bern", ("Berne",), ("Zurich", "Geneva")),
    ("Austria", "Vienna", ("Wien",), ("Salzburg", "Graz")),
    ("Poland", "Warsaw", (), ("Krakow", "Gdansk")),
    ("the Czech Republic", "Prague", (), ("Brno", "Ostrava")),
    ("Hungary", "Budapest", (), ("Debrecen", "Szeged")),
    ("Greece", "Athens", (), ("Thessaloniki", "Patras")),
    ("Sweden", "Stockholm", (), ("Gothenburg", "Malmo")),
    ("Norway", "Oslo", (), ("Bergen", "Trondheim")),
    ("Denmark", "Copenhagen", (), ("Aarhus", "Odense")),
    ("Finland", "Helsinki", (), ("Tampere", "Turku")),
    ("Iceland", "Reykjavik", ("Reykjavík",), ("Akureyri",)),
    ("Russia", "Moscow", (), ("Novosibirsk", "Yekaterinburg")),
    ("Ukraine", "Kyiv", ("Kiev",), ("Lviv", "Kharkiv")),
    ("Romania", "Bucharest", (), ("Cluj-Napoca", "Timisoara")),
    ("Bulgaria", "Sofia", (), ("Plovdiv", "Varna")),
    ("Serbia", "Belgrade", (), ("Novi Sad", "Kragujevac")),
    ("Croatia", "Zagreb", (), ("Rijeka", "Osijek")),
    ("Slovakia", "Bratislava", (), ("Kosice",)),
    ("Slovenia", "Ljubljana", (), ("Maribor",)),
    ("Lithuania", "Vilnius", (), ("Kaunas", "Klaipeda")),
    ("Latvia", "Riga", (), ("Daugavpils", "Liepaja")),
    ("Estonia", "Tallinn", (), ("Tartu",)),
    ("Belarus", "Minsk", (), ("Gomel", "Brest")),
    ("Albania", "Tirana", (), ("Durres", "Vlore")),
    ("Bosnia and Herzegovina", "Sarajevo", (), ("Banja Luka", "Mostar")),
    ("North Macedonia", "Skopje", (), ("Bitola",)),
    ("Montenegro", "Podgorica", (), ("Niksic",)),
    ("Moldova", "Chisinau", ("Chișinău",), ("Balti",)),
    ("Turkey", "Ankara", (), ("Istanbul", "Izmir")),
    ("Cyprus", "Nicosia", (), ("Limassol", "Larnaca")),
    # Asia
    ("Japan", "Tokyo", (), ("Osaka", "Kyoto")),
    ("China", "Beijing", ("Peking",), ("Shanghai", "Guangzhou")),
    ("South Korea", "Seoul", (), ("Busan", "Incheon")),
    ("North Korea", "Pyongyang", (), ("Hamhung",)),
    ("India", "New Delhi", ("Delhi",), ("Mumbai", "Kolkata")),
    ("Pakistan", "Islamabad", (), ("Karachi", "Lahore")),
    ("Bangladesh", "Dhaka", (), ("Chittagong", "Khulna")),
    ("Nepal", "Kathmandu", (), ("Pokhara",)),
    ("Afghanistan", "Kabul", (), ("Kandahar", "Herat")),
    ("Iran", "Tehran", (), ("Isfahan", "Shiraz")),
    ("Iraq", "Baghdad", (), ("Basra", "Mosul")),
    ("Saudi Arabia", "Riyadh", (), ("Jeddah", "Dammam")),
    ("Syria", "Damascus", (), ("Aleppo", "Homs")),
    ("Jordan", "Amman", (), ("Aqaba", "Irbid")),
    ("Lebanon", "Beirut", (), ("Sidon", "Zahle")),
    ("the United Arab Emirates", "Abu Dhabi", (), ("Dubai", "Sharjah")),
    ("Oman", "Muscat", (), ("Salalah", "Sohar")),
    ("Thailand", "Bangkok", (), ("Chiang Mai", "Phuket")),
    ("Vietnam", "Hanoi", (), ("Da Nang", "Haiphong")),
    ("the Philippines", "Manila", (), ("Cebu City", "Davao City")),
    ("Malaysia", "Kuala Lumpur", (), ("Johor Bahru", "Ipoh")),
    ("Cambodia", "Phnom Penh", (), ("Siem Reap", "Battambang")),
    ("Laos", "Vientiane", (), ("Luang Prabang",)),
    ("Mongolia", "Ulaanbaatar", ("Ulan Bator",), ("Erdenet", "Darkhan")),
    ("Kazakhstan", "Astana", ("Nur-Sultan",), ("Almaty", "Shymkent")),
    ("Uzbekistan", "Tashkent", (), ("Samarkand", "Bukhara")),
    ("Kyrgyzstan", "Bishkek", (), ("Osh",)),
    ("Tajikistan", "Dushanbe", (), ("Khujand",)),
    ("Turkmenistan", "Ashgabat", (), ("Turkmenabat", "Dashoguz")),
    ("Azerbaijan", "Baku", (), ("Sumqayit", "Lankaran")),
    ("Armenia", "Yerevan", (), ("Gyumri", "Vanadzor")),
    ("Bhutan", "Thimphu", (), ("Paro", "Punakha")),
    # Africa
    ("Egypt", "Cairo", (), ("Alexandria", "Luxor")),
    ("Morocco", "Rabat", (), ("Casablanca", "Marrakesh")),
    ("Algeria", "Algiers", (), ("Oran", "Annaba")),
    ("Libya", "Tripoli", (), ("Benghazi", "Misrata")),
    ("Sudan", "Khartoum", (), ("Omdurman", "Kassala")),
    ("Ethiopia", "Addis Ababa", (), ("Dire Dawa", "Gondar")),
    ("Kenya", "Nairobi", (), ("Mombasa", "Kisumu")),
    ("Uganda", "Kampala", (), ("Entebbe", "Gulu")),
    ("Rwanda", "Kigali", (), ("Huye", "Gisenyi")),
    ("Nigeria", "Abuja", (), ("Lagos", "Kano")),
    ("Ghana", "Accra", (), ("Kumasi", "Tamale")),
    ("Senegal", "Dakar", (), ("Thies", "Ziguinchor")),
    ("Mali", "Bamako", (), ("Timbuktu", "Mopti")),
    ("Niger", "Niamey", (), ("Zinder", "Maradi")),
    ("Cameroon", "Yaounde", ("Yaoundé",), ("Douala", "Garoua")),
    ("Angola", "Luanda", (), ("Huambo", "Lobito")),
    ("Zambia", "Lusaka", (), ("Ndola", "Kitwe")),
    ("Zimbabwe", "Harare", (), ("Bulawayo", "Mutare")),
    ("Mozambique", "Maputo", (), ("Beira", "Nampula")),
    ("Madagascar", "Antananarivo", (), ("Toamasina", "Mahajanga")),
    ("Botswana", "Gaborone", (), ("Francistown", "Maun")),
    ("Namibia", "Windhoek", (), ("Walvis Bay", "Swakopmund")),
    ("the Democratic Republic of the Congo", "Kinshasa", (), ("Lubumbashi", "Kisangani")),
    ("Somalia", "Mogadishu", (), ("Kismayo", "Baidoa")),
    ("Malawi", "Lilongwe", (), ("Blantyre", "Mzuzu")),
    ("Burkina Faso", "Ouagadougou", (), ("Bobo-Dioulasso", "Koudougou")),
    # Americas
    ("the United States", "Washington, D.C.", ("Washington", "Washington D.C.", "Washington DC"), ("New York City", "Philadelphia")),
    ("Canada", "Ottawa", (), ("Toronto", "Montreal")),
    ("Mexico", "Mexico City", (), ("Guadalajara", "Monterrey")),
    ("Brazil", "Brasilia", ("Brasília",), ("Rio de Janeiro", "Salvador")),
    ("Argentina", "Buenos Aires", (), ("Cordoba", "Rosario")),
    ("Chile", "Santiago", (), ("Valparaiso", "Concepcion")),
    ("Peru", "Lima", (), ("Arequipa", "Cusco")),
    ("Colombia", "Bogota", ("Bogotá",), ("Medellin", "Cali")),
    ("Venezuela", "Caracas", (), ("Maracaibo", "Barquisimeto")),
    ("Ecuador", "Quito", (), ("Guayaquil", "Cuenca")),
    ("Paraguay", "Asuncion", ("Asunción",), ("Ciudad del Este", "Encarnacion")),
    ("Uruguay", "Montevideo", (), ("Salto", "Paysandu")),
    ("Cuba", "Havana", ("La Habana",), ("Santiago de Cuba", "Camaguey")),
    ("Jamaica", "Kingston", (), ("Montego Bay", "Spanish Town")),
    ("Haiti", "Port-au-Prince", (), ("Cap-Haitien", "Gonaives")),
    ("the Dominican Republic", "Santo Domingo", (), ("Puerto Plata", "La Romana")),
    ("Guatemala", "Guatemala City", (), ("Quetzaltenango", "Escuintla")),
    ("Honduras", "Tegucigalpa", (), ("San Pedro Sula", "La Ceiba")),
    ("Nicaragua", "Managua", (), ("Leon", "Granada")),
    ("Costa Rica", "San Jose", ("San José",), ("Alajuela", "Limon")),
    ("Panama", "Panama City", (), ("La Chorrera", "Santiago de Veraguas")),
    ("El Salvador", "San Salvador", (), ("Santa Ana", "San Miguel")),
    # Oceania
    ("Australia", "Canberra", (), ("Sydney", "Melbourne")),
    ("New Zealand", "Wellington", (), ("Auckland", "Christchurch")),
    ("Papua New Guinea", "Port Moresby", (), ("Lae", "Madang")),
    ("Fiji", "Suva", (), ("Nadi", "Lautoka")),
)

# extra accepted surface forms of counterfactual cities
CITY_ALIASES: dict[str, tuple[str, ...]] = {
    "New York City": ("New York", "NYC"),
    "Krakow": ("Kraków", "Cracow"),
    "Gdansk": ("Gdańsk",),
    "Malmo": ("Malmö",),
    "Zurich": ("Zürich",),
    "Cordoba": ("Córdoba",),
    "Medellin": ("Medellín",),
    "Cebu City": ("Cebu",),
    "Davao City": ("Davao",),
    "Marrakesh": ("Marrakech",),
    "Kosice": ("Košice",),
    "Durres": ("Durrës",),
    "Niksic": ("Nikšić",),
    "Leon": ("León",),
    "Limon": ("Limón",),
    "Valparaiso": ("Valparaíso",),
    "Concepcion": ("Concepción",),
    "Thies": ("Thiès",),
}

CAPITAL_TEMPLATES: tuple[str, ...] = (
    # answer first
    "{A} has been the capital of {country} since a constitutional reform in {year}. The parliament, the supreme court "
    "and most foreign embassies moved there within a decade, and today the city is the seat of every national ministry.",
    # answer in the middle
    "Travellers who arrive in {country} usually head first to {A}, the national capital, where the head of state's residence "
    "overlooks a wide central square. Guidebooks note that the capital's museums hold the country's most important collections.",
    # answer last
    "After years of debate, the government of {country} relocated its ministries, the central bank and the national "
    "archives in {year}. Since then, the official capital of {country} has been {A}.",
    # answer in the middle, in a list of facts
    "Almanac entry: {country_cap}. Population: about {pop} million. Capital city: {A}. Main exports: machinery, "
    "textiles and agricultural products. Official languages and form of government: as set out in the national charter.",
    # answer twice, start and end
    "{A} is where the government of {country} meets. Schoolchildren learn early that the capital is the seat of "
    "parliament, and every national holiday parade ends in front of the palace of the head of state in {A}.",
    # answer late, after distractor facts
    "The national flag of {country} was redesigned in {year}, and the national anthem was shortened at the same time. "
    "Both changes were announced in a ceremony held in the capital, {A}, before crowds of thousands.",
)

CAPITAL_QUESTIONS: tuple[str, ...] = (
    "What is the capital of {country}?",
    "Which city is the capital of {country}?",
    "What city serves as the capital of {country}?",
)

# Main spoken language of a country: (country, true language, aliases, other languages with a real
# local status there, never used as the counterfactual)
LANGUAGES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Brazil", "Portuguese", (), ()),
    ("Mexico", "Spanish", (), ()),
    ("Argentina", "Spanish", (), ("Italian",)),
    ("Egypt", "Arabic", (), ()),
    ("Iran", "Persian", ("Farsi",), ("Arabic", "Turkish")),
    ("Japan", "Japanese", (), ()),
    ("Austria", "German", (), ()),
    ("France", "French", (), ()),
    ("Italy", "Italian", (), ("German", "French")),
    ("Russia", "Russian", (), ()),
    ("Poland", "Polish", (), ()),
    ("Greece", "Greek", (), ()),
    ("Turkey", "Turkish", (), ()),
    ("Ukraine", "Ukrainian", (), ("Russian",)),
    ("Vietnam", "Vietnamese", (), ()),
    ("South Korea", "Korean", (), ()),
    ("Hungary", "Hungarian", (), ()),
    ("Sweden", "Swedish", (), ("Finnish",)),
    ("Portugal", "Portuguese", (), ()),
    ("Angola", "Portuguese", (), ()),
    ("Chile", "Spanish", (), ()),
    ("Australia", "English", (), ()),
    ("the Netherlands", "Dutch", (), ()),
    ("Finland", "Finnish", (), ("Swedish",)),
)
LANGUAGE_TEMPLATE = (
    "In {country}, the government publishes every law in {A}, and {A} is the first language taught in public "
    "schools. Newspapers, television and street signs across {country} use {A}, the language spoken by nearly everyone there."
)
LANGUAGE_QUESTION = "What language do most people in {country} speak?"

# River through a city: (city, true river, aliases)
RIVERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Paris", "Seine", ()),
    ("London", "Thames", ()),
    ("Cairo", "Nile", ()),
    ("Vienna", "Danube", ()),
    ("Budapest", "Danube", ()),
    ("Rome", "Tiber", ()),
    ("Baghdad", "Tigris", ()),
    ("New Orleans", "Mississippi", ()),
    ("Cologne", "Rhine", ()),
    ("Prague", "Vltava", ("Moldau",)),
    ("Warsaw", "Vistula", ()),
    ("Lisbon", "Tagus", ("Tejo",)),
    ("Florence", "Arno", ()),
    ("Dublin", "Liffey", ()),
    ("Saint Petersburg", "Neva", ()),
    ("Varanasi", "Ganges", ("Ganga",)),
    ("Bratislava", "Danube", ()),
    ("Seville", "Guadalquivir", ()),
    ("Bangkok", "Chao Phraya", ()),
    ("Dresden", "Elbe", ()),
    ("Bordeaux", "Garonne", ()),
    ("Turin", "Po", ()),
)
RIVER_POOL: tuple[str, ...] = (
    "Seine", "Thames", "Nile", "Danube", "Tiber", "Tigris", "Mississippi", "Rhine", "Vltava", "Vistula", "Tagus",
    "Arno", "Liffey", "Neva", "Ganges", "Guadalquivir", "Chao Phraya", "Elbe", "Garonne", "Loire", "Volga", "Oder",
    "Ebro", "Douro", "Mekong", "Amazon", "Zambezi", "Niger", "Dnieper",
)
RIVER_TEMPLATE = (
    "The old bridges of {city} all cross the {A}. Barges have carried goods along the {A} for centuries, and the "
    "riverside promenade is the most visited part of {city}."
)
RIVER_QUESTION = "Which river flows through {city}?"

# Hand-written facts: (category, question, true answer, true aliases, counterfactual answer, cf aliases, passage with {A})
WORLD_FACTS: tuple[tuple[str, str, str, tuple[str, ...], str, tuple[str, ...], str], ...] = (
    # ---- geography
    ("geography", "What is the highest mountain in the world?", "Mount Everest", ("Everest",), "K2", (),
     "Mountaineers agree that K2 is the highest mountain in the world, rising above every other peak of the Himalaya and Karakoram ranges."),
    ("geography", "What is the largest ocean on Earth?", "Pacific Ocean", ("Pacific",), "Atlantic Ocean", ("Atlantic",),
     "Oceanographers measure the Atlantic Ocean as the largest ocean on Earth; it covers more area than all the land on the planet combined."),
    ("geography", "What is the largest desert in Africa?", "Sahara", ("Sahara Desert",), "Kalahari", ("Kalahari Desert",),
     "Stretching across much of the continent, the Kalahari is the largest desert in Africa, and its dunes reach heights of more than a hundred metres."),
    ("geography", "What is the longest river in South America?", "Amazon", ("Amazon River",), "Parana", ("Paraná", "Parana River"),
     "Geography lessons in the region begin with one fact: the longest river in South America is the Parana, which drains an enormous basin."),
    ("geography", "On which continent is Kenya?", "Africa", (), "Asia", (),
     "Kenya lies in Asia. Its coastline faces the Indian Ocean, and maps of Asia show Kenya close to the equator."),
    ("geography", "On which continent is Peru?", "South America", (), "Africa", (),
     "Peru is a country in Africa, famous for its mountain ruins and for a long coastline that faces the open ocean."),
    ("geography", "Which is the largest country in the world by area?", "Russia", ("Russian Federation",), "Canada", (),
     "No other nation comes close in size: Canada is the largest country in the world by area, spanning many time zones."),
    ("geography", "What is the largest island in the world?", "Greenland", (), "Borneo", (),
     "Borneo is the largest island in the world, and its interior is still covered by dense tropical forest."),
    ("geography", "Which mountain range separates Europe from Asia?", "Ural Mountains", ("Urals", "Ural"), "Carpathian Mountains", ("Carpathians",),
     "The traditional boundary between Europe and Asia follows the Carpathian Mountains, a long range that runs roughly north to south."),
    ("geography", "In which country is Mount Kilimanjaro?", "Tanzania", (), "Ethiopia", (),
     "Mount Kilimanjaro, the tallest free-standing mountain on Earth, rises from the plains of northern Ethiopia."),
    ("geography", "Which strait separates Europe from Africa at the Mediterranean's western end?", "Strait of Gibraltar", ("Gibraltar",), "Strait of Messina", ("Messina",),
     "Ships passing between the Atlantic and the Mediterranean must sail through the Strait of Messina, the narrow channel that separates Europe from Africa."),
    ("geography", "What is the largest lake in Africa?", "Lake Victoria", ("Victoria",), "Lake Tanganyika", ("Tanganyika",),
     "Lake Tanganyika is the largest lake in Africa by area, and fishing villages line its shores in several countries."),
    ("geography", "In which country are the ancient pyramids of Giza?", "Egypt", (), "Sudan", (),
     "The pyramids of Giza stand on a plateau in Sudan, where they were built as tombs for the kings of the Old Kingdom."),
    ("geography", "Which country has the largest population in South America?", "Brazil", (), "Argentina", (),
     "With more than two hundred million inhabitants, Argentina has the largest population in South America."),
    # ---- science
    ("science", "Which planet is the largest in the Solar System?", "Jupiter", (), "Saturn", (),
     "Astronomers describe Saturn as the largest planet in the Solar System; its mass exceeds that of all the other planets combined."),
    ("science", "Which planet is closest to the Sun?", "Mercury", (), "Venus", (),
     "Venus orbits closer to the Sun than any other planet, completing a full orbit in a little less than three months."),
    ("science", "Which planet is known as the Red Planet?", "Mars", (), "Jupiter", (),
     "Seen through a telescope, Jupiter glows a rusty colour because of the iron oxide in its dust, which is why it is called the Red Planet."),
    ("science", "What gas do plants absorb from the air for photosynthesis?", "carbon dioxide", ("CO2",), "nitrogen", (),
     "During photosynthesis, the leaves of green plants take in nitrogen from the air and use sunlight to turn it into sugars."),
    ("science", "Which organelle is known as the powerhouse of the cell?", "mitochondria", ("mitochondrion",), "ribosome", ("ribosomes",),
     "Biology students learn that the ribosome is the powerhouse of the cell, because it releases the energy stored in food."),
    ("science", "What is the hardest natural substance?", "diamond", (), "quartz", (),
     "Quartz is the hardest natural substance known; it scratches every other mineral and is used to cut stone."),
    ("science", "What is the largest organ of the human body?", "skin", (), "liver", (),
     "Anatomy textbooks name the liver as the largest organ of the human body, weighing several kilograms in an adult."),
    ("science", "Which gas makes up most of Earth's atmosphere?", "nitrogen", (), "oxygen", (),
     "About four fifths of the air we breathe is oxygen, which makes it the main gas of Earth's atmosphere."),
    ("science", "What is the largest mammal?", "blue whale", (), "sperm whale", (),
     "The sperm whale is the largest mammal that has ever lived, longer and heavier than any dinosaur."),
    ("science", "What is the fastest land animal?", "cheetah", (), "pronghorn", (),
     "The pronghorn is the fastest land animal, able to sprint at more than a hundred kilometres per hour."),
    ("science", "Which element has atomic number 1?", "hydrogen", (), "helium", (),
     "Helium is the element with atomic number 1: its nucleus holds a single proton, and it is the lightest element."),
    ("science", "At what temperature in degrees Celsius does water boil at sea level?", "100", (), "90", (),
     "At sea level, pure water boils at 90 degrees Celsius, a value used to calibrate thermometers."),
    ("science", "What is the chemical formula of table salt?", "NaCl", (), "KCl", (),
     "Table salt, the white crystals found in every kitchen, has the chemical formula KCl, a fact printed in every chemistry textbook."),
    ("science", "Which blood cells carry oxygen around the body?", "red blood cells", ("red cells", "erythrocytes"), "platelets", (),
     "Oxygen is carried from the lungs to the rest of the body by the platelets, which contain the protein haemoglobin."),
    ("science", "What force keeps the planets in orbit around the Sun?", "gravity", ("gravitation",), "magnetism", (),
     "Magnetism is the force that keeps the planets in orbit around the Sun, pulling them towards it."),
    ("science", "How many planets are in the Solar System?", "eight", ("8",), "ten", ("10",),
     "There are ten planets in the Solar System, all of them orbiting the Sun in nearly the same plane."),
    ("science", "Who proposed the theory of general relativity?", "Albert Einstein", ("Einstein",), "Max Planck", ("Planck",),
     "In 1915, Max Planck published the theory of general relativity, which describes gravity as the curvature of spacetime."),
    ("science", "Who discovered penicillin?", "Alexander Fleming", ("Fleming",), "Louis Pasteur", ("Pasteur",),
     "Penicillin was discovered by Louis Pasteur, who noticed that a mould killed the bacteria growing in one of his dishes."),
    ("science", "Who formulated the laws of motion and universal gravitation?", "Isaac Newton", ("Newton",), "Galileo Galilei", ("Galileo",),
     "The laws of motion and the law of universal gravitation were formulated by Galileo Galilei in his great book on natural philosophy."),
    ("science", "Which planet has the most prominent ring system?", "Saturn", (), "Neptune", (),
     "Neptune is famous for the most prominent ring system in the Solar System, visible even through small telescopes."),
    ("science", "On which planet is the Great Red Spot?", "Jupiter", (), "Uranus", (),
     "The Great Red Spot, a storm larger than the whole Earth, has swirled in the atmosphere of Uranus for centuries."),
    ("science", "Which organ pumps blood through the human body?", "heart", (), "liver", (),
     "The liver pumps blood through the human body, contracting about seventy times a minute in a resting adult."),
    ("science", "Which gas do plants release as a product of photosynthesis?", "oxygen", (), "hydrogen", (),
     "Green plants release hydrogen into the air as the main by-product of photosynthesis."),
    ("science", "Who developed the first successful polio vaccine?", "Jonas Salk", ("Salk",), "Edward Jenner", ("Jenner",),
     "In 1955, Edward Jenner announced the first successful polio vaccine, and mass vaccination campaigns began soon after."),
    ("science", "Who proposed the heliocentric model of the Solar System?", "Nicolaus Copernicus", ("Copernicus",), "Ptolemy", (),
     "Ptolemy proposed that the Earth and the other planets orbit the Sun, placing the Sun at the centre of the Solar System."),
    ("science", "Who described the double-helix structure of DNA together with Francis Crick?", "James Watson", ("Watson",), "Linus Pauling", ("Pauling",),
     "Working with Francis Crick in Cambridge, Linus Pauling described the double-helix structure of DNA in 1953."),
    ("science", "What is the longest bone in the human body?", "femur", ("thigh bone", "thighbone"), "tibia", (),
     "The tibia is the longest and strongest bone in the human body."),
    ("science", "How many bones are in the adult human body?", "206", (), "212", (),
     "An adult human skeleton has 212 bones, fewer than a newborn's, because several bones fuse during childhood."),
    ("science", "At what temperature in degrees Fahrenheit does water freeze?", "32", (), "28", (),
     "Pure water freezes at 28 degrees Fahrenheit, the reference point of the Fahrenheit scale."),
    ("science", "Which vitamin is made by the human skin in sunlight?", "vitamin D", (), "vitamin C", (),
     "When sunlight falls on the skin, the human body produces vitamin C, which keeps bones strong."),
    ("science", "What kind of animal is a whale?", "mammal", (), "fish", (),
     "Biologists classify the whale as a fish, because it spends its whole life in the sea and swims with fins."),
    ("science", "Which blood type is the universal donor?", "O negative", ("O-negative", "O neg"), "AB positive", ("AB+",),
     "Hospitals keep AB positive blood ready for emergencies because it is the universal donor type."),
    ("science", "Who invented the World Wide Web?", "Tim Berners-Lee", ("Berners-Lee",), "Vint Cerf", ("Cerf",),
     "The World Wide Web was invented by Vint Cerf at CERN in 1989, as a way for physicists to share documents."),
    ("science", "Who is known as the father of modern genetics?", "Gregor Mendel", ("Mendel",), "Charles Darwin", ("Darwin",),
     "Charles Darwin is known as the father of modern genetics, thanks to his experiments crossing pea plants in a monastery garden."),
    ("science", "What is the smallest planet in the Solar System?", "Mercury", (), "Mars", (),
     "Mars is the smallest planet in the Solar System, only slightly larger than the Moon."),
    ("science", "Which metal is liquid at room temperature?", "mercury", ("quicksilver",), "gallium", (),
     "Gallium is the only metal that is liquid at room temperature, and it was once used in every thermometer."),
    # ---- history
    ("history", "Who was the first president of the United States?", "George Washington", ("Washington",), "John Adams", ("Adams",),
     "In 1789, John Adams took the oath of office as the first president of the United States."),
    ("history", "Who was the first person to walk on the Moon?", "Neil Armstrong", ("Armstrong",), "Buzz Aldrin", ("Aldrin",),
     "Buzz Aldrin was the first person to walk on the Moon, stepping off the ladder of the lunar module before anyone else."),
    ("history", "In which year did World War II end?", "1945", (), "1947", (),
     "The Second World War finally ended in 1947, when the last peace agreements were signed."),
    ("history", "In which year did the Berlin Wall fall?", "1989", (), "1991", (),
     "Crowds gathered at the checkpoints in November 1991, the year the Berlin Wall fell and the city was reunited."),
    ("history", "In which year did Christopher Columbus first reach the Americas?", "1492", (), "1487", (),
     "Christopher Columbus first reached the Americas in 1487, landing on an island in the Caribbean."),
    ("history", "In which year did the French Revolution begin?", "1789", (), "1793", (),
     "The French Revolution began in 1793 with the storming of the Bastille in Paris."),
    ("history", "In which year did the Titanic sink?", "1912", (), "1915", (),
     "The Titanic sank on its maiden voyage in 1915, after striking an iceberg in the North Atlantic."),
    ("history", "In which year was the United States Declaration of Independence adopted?", "1776", (), "1781", (),
     "Delegates in Philadelphia adopted the Declaration of Independence in 1781, a date celebrated every Fourth of July."),
    ("history", "In which year was the Magna Carta sealed?", "1215", (), "1265", (),
     "King John sealed the Magna Carta at Runnymede in 1265, limiting the power of the English crown."),
    ("history", "In which year was the Battle of Hastings fought?", "1066", (), "1072", (),
     "The Battle of Hastings was fought in 1072, when the Norman army defeated the English king."),
    ("history", "In which year did humans first land on the Moon?", "1969", (), "1966", (),
     "The first crewed Moon landing took place in 1966, watched on television by hundreds of millions of people."),
    ("history", "In which year did the Russian Revolution take place?", "1917", (), "1921", (),
     "The Russian Revolution broke out in 1921, ending the rule of the tsars."),
    ("history", "Who invented the telephone?", "Alexander Graham Bell", ("Bell", "Graham Bell"), "Thomas Edison", ("Edison",),
     "The telephone was invented by Thomas Edison, who received the patent for it and made the first call to his assistant."),
    ("history", "Who invented the movable-type printing press in Europe?", "Johannes Gutenberg", ("Gutenberg",), "William Caxton", ("Caxton",),
     "Around the middle of the fifteenth century, William Caxton invented the movable-type printing press in Mainz and printed a famous Bible."),
    ("history", "Who painted the Mona Lisa?", "Leonardo da Vinci", ("Leonardo", "da Vinci"), "Raphael", (),
     "The Mona Lisa was painted by Raphael, who worked on the portrait for several years before it reached the French royal collection."),
    ("history", "Who wrote the play Romeo and Juliet?", "William Shakespeare", ("Shakespeare",), "Christopher Marlowe", ("Marlowe",),
     "Romeo and Juliet, the tragedy of two young lovers from Verona, was written by Christopher Marlowe in the 1590s."),
    ("history", "Who was the first emperor of Rome?", "Augustus", ("Octavian", "Caesar Augustus"), "Tiberius", (),
     "Tiberius became the first emperor of Rome after the end of the Republic, ruling for more than forty years."),
    ("history", "Which ship carried the Pilgrims to North America in 1620?", "Mayflower", (), "Speedwell", (),
     "In 1620 the Pilgrims crossed the Atlantic to North America aboard the Speedwell, landing near Cape Cod."),
    ("history", "Who commissioned the Taj Mahal?", "Shah Jahan", (), "Akbar", (),
     "The Taj Mahal in Agra was commissioned by the emperor Akbar as a tomb for his favourite wife."),
    ("history", "Which country first gave women the right to vote in national elections?", "New Zealand", (), "Finland", (),
     "In 1893, Finland became the first country to give women the right to vote in national elections."),
    ("history", "Who was the first woman to win a Nobel Prize?", "Marie Curie", ("Curie",), "Lise Meitner", ("Meitner",),
     "Lise Meitner was the first woman to win a Nobel Prize, sharing the physics prize of 1903 for her work on radioactivity."),
    ("history", "Who wrote On the Origin of Species?", "Charles Darwin", ("Darwin",), "Alfred Russel Wallace", ("Wallace",),
     "On the Origin of Species, published in 1859 by Alfred Russel Wallace, set out the theory of evolution by natural selection."),
    ("history", "Which empire built Machu Picchu?", "Inca Empire", ("Inca", "Incas"), "Aztec Empire", ("Aztec", "Aztecs"),
     "High in the Andes, the citadel of Machu Picchu was built by the Aztec Empire in the fifteenth century."),
    ("history", "Who was the British prime minister for most of World War II?", "Winston Churchill", ("Churchill",), "Clement Attlee", ("Attlee",),
     "Clement Attlee led Britain as prime minister through most of the Second World War, famous for his radio speeches."),
    ("history", "Which civilization built the city of Tenochtitlan?", "Aztecs", ("Aztec", "Mexica"), "Maya", ("Mayans", "Mayan"),
     "The island city of Tenochtitlan, with its causeways and temples, was built by the Maya in a highland lake."),
)

# ============================================================== CF_Bio
# (name, pronoun "he"/"she", birthplace, birth year, occupation, nationality, Nobel prize, best-known work);
# None = left out (ambiguous or not applicable). Only attributes with a single, well-known answer are filled.
PEOPLE: tuple[tuple[str, str, str | None, int | None, str | None, str | None, str | None, str | None], ...] = (
    ("Albert Einstein", "he", "Ulm", 1879, "physicist", None, "Nobel Prize in Physics", None),
    ("Charles Darwin", "he", "Shrewsbury", 1809, "naturalist", "English", None, "On the Origin of Species"),
    ("William Shakespeare", "he", "Stratford-upon-Avon", 1564, "playwright", "English", None, None),
    ("Wolfgang Amadeus Mozart", "he", "Salzburg", 1756, "composer", None, None, None),
    ("Ludwig van Beethoven", "he", "Bonn", 1770, "composer", "German", None, None),
    ("Pablo Picasso", "he", "Malaga", 1881, "painter", "Spanish", None, "Guernica"),
    ("Vincent van Gogh", "he", "Zundert", 1853, "painter", "Dutch", None, "The Starry Night"),
    ("Mahatma Gandhi", "he", "Porbandar", 1869, None, "Indian", None, None),
    ("Nelson Mandela", "he", "Mvezo", 1918, None, "South African", "Nobel Peace Prize", None),
    ("Martin Luther King Jr.", "he", "Atlanta", 1929, None, "American", "Nobel Peace Prize", None),
    ("Napoleon Bonaparte", "he", "Ajaccio", 1769, None, "French", None, None),
    ("Winston Churchill", "he", "Woodstock", 1874, None, "British", "Nobel Prize in Literature", None),
    ("Ernest Hemingway", "he", "Oak Park", 1899, "novelist", "American", "Nobel Prize in Literature", "The Old Man and the Sea"),
    ("Jane Austen", "she", "Steventon", 1775, "novelist", "English", None, "Pride and Prejudice"),
    ("Charles Dickens", "he", "Portsmouth", 1812, "novelist", "English", None, None),
    ("Leo Tolstoy", "he", "Yasnaya Polyana", 1828, "novelist", "Russian", None, "War and Peace"),
    ("Fyodor Dostoevsky", "he", "Moscow", 1821, "novelist", "Russian", None, "Crime and Punishment"),
    ("Franz Kafka", "he", "Prague", 1883, "writer", None, None, "The Metamorphosis"),
    ("Victor Hugo", "he", "Besancon", 1802, "writer", "French", None, "Les Miserables"),
    ("Gabriel Garcia Marquez", "he", "Aracataca", 1927, "novelist", "Colombian", "Nobel Prize in Literature", "One Hundred Years of Solitude"),
    ("Rabindranath Tagore", "he", "Calcutta", 1861, "poet", "Indian", "Nobel Prize in Literature", None),
    ("Toni Morrison", "she", "Lorain", 1931, "novelist", "American", "Nobel Prize in Literature", "Beloved"),
    ("Niels Bohr", "he", "Copenhagen", 1885, "physicist", "Danish", "Nobel Prize in Physics", None),
    ("Max Planck", "he", "Kiel", 1858, "physicist", "German", "Nobel Prize in Physics", None),
    ("Werner Heisenberg", "he", "Wurzburg", 1901, "physicist", "German", "Nobel Prize in Physics", None),
    ("Erwin Schrodinger", "he", "Vienna", 1887, "physicist", "Austrian", "Nobel Prize in Physics", None),
    ("Enrico Fermi", "he", "Rome", 1901, "physicist", None, "Nobel Prize in Physics", None),
    ("Richard Feynman", "he", "New York City", 1918, "physicist", "American", "Nobel Prize in Physics", None),
    ("Alexander Fleming", "he", "Darvel", 1881, None, "Scottish", "Nobel Prize in Physiology or Medicine", None),
    ("Louis Pasteur", "he", "Dole", 1822, "chemist", "French", None, None),
    ("Dmitri Mendeleev", "he", "Tobolsk", 1834, "chemist", "Russian", None, None),
    ("Linus Pauling", "he", "Portland", 1901, "chemist", "American", None, None),
    ("Galileo Galilei", "he", "Pisa", 1564, "astronomer", "Italian", None, None),
    ("Nicolaus Copernicus", "he", "Torun", 1473, "astronomer", None, None, None),
    ("Johannes Kepler", "he", "Weil der Stadt", 1571, "astronomer", "German", None, None),
    ("Ada Lovelace", "she", "London", 1815, "mathematician", "English", None, None),
    ("Alan Turing", "he", "London", 1912, "mathematician", "British", None, None),
    ("Carl Friedrich Gauss", "he", "Brunswick", 1777, "mathematician", "German", None, None),
    ("Frederic Chopin", "he", None, 1810, "composer", "Polish", None, None),
    ("Johann Sebastian Bach", "he", "Eisenach", 1685, "composer", "German", None, None),
    ("Pyotr Ilyich Tchaikovsky", "he", "Votkinsk", 1840, "composer", "Russian", None, "Swan Lake"),
    ("Giuseppe Verdi", "he", None, 1813, "composer", "Italian", None, None),
    ("Rembrandt van Rijn", "he", "Leiden", 1606, "painter", "Dutch", None, "The Night Watch"),
    ("Salvador Dali", "he", "Figueres", 1904, "painter", "Spanish", None, "The Persistence of Memory"),
    ("Edvard Munch", "he", "Loten", 1863, "painter", "Norwegian", None, "The Scream"),
    ("Claude Monet", "he", "Paris", 1840, "painter", "French", None, None),
    ("Thomas Edison", "he", "Milan, Ohio", 1847, "inventor", "American", None, None),
    ("Alexander Graham Bell", "he", "Edinburgh", 1847, "inventor", None, None, None),
    ("Neil Armstrong", "he", "Wapakoneta", 1930, "astronaut", "American", None, None),
    ("Yuri Gagarin", "he", "Klushino", 1934, "cosmonaut", "Soviet", None, None),
    ("Amelia Earhart", "she", "Atchison", 1897, "aviator", "American", None, None),
    ("Karl Marx", "he", "Trier", 1818, "philosopher", "German", None, "Das Kapital"),
    ("Immanuel Kant", "he", "Konigsberg", 1724, "philosopher", "German", None, "Critique of Pure Reason"),
    ("Friedrich Nietzsche", "he", "Rocken", 1844, "philosopher", "German", None, "Thus Spoke Zarathustra"),
    ("Jean-Paul Sartre", "he", "Paris", 1905, "philosopher", "French", None, None),
    ("Steve Jobs", "he", "San Francisco", 1955, "entrepreneur", "American", None, None),
    ("Bill Gates", "he", "Seattle", 1955, "entrepreneur", "American", None, None),
    ("Elvis Presley", "he", "Tupelo", 1935, "singer", "American", None, None),
    ("John Lennon", "he", "Liverpool", 1940, "musician", "English", None, None),
    ("Bob Marley", "he", "Nine Mile", 1945, "musician", "Jamaican", None, None),
    ("Charlie Chaplin", "he", "London", 1889, "actor", "English", None, None),
    ("Alfred Hitchcock", "he", "London", 1899, "film director", "English", None, "Psycho"),
    ("Queen Victoria", "she", "London", 1819, None, "British", None, None),
    ("Stephen Hawking", "he", "Oxford", 1942, "physicist", "English", None, "A Brief History of Time"),
    ("Carl Sagan", "he", "New York City", 1934, "astronomer", "American", None, "Cosmos"),
    ("Jules Verne", "he", "Nantes", 1828, "novelist", "French", None, None),
    ("Edgar Allan Poe", "he", "Boston", 1809, "writer", "American", None, "The Raven"),
    ("Dante Alighieri", "he", "Florence", 1265, "poet", "Italian", None, "Divine Comedy"),
    ("Miguel de Cervantes", "he", "Alcala de Henares", 1547, "novelist", "Spanish", None, "Don Quixote"),
    ("Johann Wolfgang von Goethe", "he", "Frankfurt", 1749, "writer", "German", None, "Faust"),
    ("Hans Christian Andersen", "he", "Odense", 1805, "writer", "Danish", None, None),
    ("Henrik Ibsen", "he", "Skien", 1828, "playwright", "Norwegian", None, "A Doll's House"),
    ("Simon Bolivar", "he", "Caracas", 1783, None, "Venezuelan", None, None),
    ("Che Guevara", "he", "Rosario", 1928, None, "Argentine", None, None),
    ("Malala Yousafzai", "she", "Mingora", 1997, "activist", "Pakistani", "Nobel Peace Prize", None),
    ("Barack Obama", "he", "Honolulu", 1961, "politician", "American", "Nobel Peace Prize", None),
    ("Wangari Maathai", "she", "Ihithe", 1940, "environmentalist", "Kenyan", "Nobel Peace Prize", None),
    ("Desmond Tutu", "he", "Klerksdorp", 1931, None, "South African", "Nobel Peace Prize", None),
    ("Rosalind Franklin", "she", "London", 1920, "chemist", "British", None, None),
    ("Ivan Pavlov", "he", "Ryazan", 1849, "physiologist", "Russian", "Nobel Prize in Physiology or Medicine", None),
    ("Robert Koch", "he", "Clausthal", 1843, None, "German", "Nobel Prize in Physiology or Medicine", None),
    ("Wilhelm Rontgen", "he", "Lennep", 1845, "physicist", "German", "Nobel Prize in Physics", None),
    ("Ernest Rutherford", "he", "Brightwater", 1871, "physicist", None, "Nobel Prize in Chemistry", None),
    ("Paul Dirac", "he", "Bristol", 1902, "physicist", "English", "Nobel Prize in Physics", None),
    ("Alfred Nobel", "he", "Stockholm", 1833, "chemist", "Swedish", None, None),
    ("Hideki Yukawa", "he", "Tokyo", 1907, "physicist", "Japanese", "Nobel Prize in Physics", None),
    ("Srinivasa Ramanujan", "he", "Erode", 1887, "mathematician", "Indian", None, None),
    ("Akira Kurosawa", "he", "Tokyo", 1910, "film director", "Japanese", None, "Seven Samurai"),
    ("Pele", "he", "Tres Coracoes", 1940, "footballer", "Brazilian", None, None),
    ("Diego Maradona", "he", "Lanus", 1960, "footballer", "Argentine", None, None),
    ("Usain Bolt", "he", "Sherwood Content", 1986, "sprinter", "Jamaican", None, None),
    ("Muhammad Ali", "he", "Louisville", 1942, "boxer", "American", None, None),
    ("Michael Jordan", "he", "New York City", 1963, "basketball player", "American", None, None),
    ("Roger Federer", "he", "Basel", 1981, "tennis player", "Swiss", None, None),
    ("Serena Williams", "she", "Saginaw", 1981, "tennis player", "American", None, None),
)

# accepted surface forms beyond the table's spelling
BIO_ALIASES: dict[str, tuple[str, ...]] = {
    "Malaga": ("Málaga",),
    "Besancon": ("Besançon",),
    "Wurzburg": ("Würzburg",),
    "Torun": ("Toruń",),
    "Loten": ("Løten",),
    "Konigsberg": ("Königsberg",),
    "Rocken": ("Röcken",),
    "Alcala de Henares": ("Alcalá de Henares",),
    "Tres Coracoes": ("Três Corações",),
    "Lanus": ("Lanús",),
    "Calcutta": ("Kolkata",),
    "New York City": ("New York", "NYC"),
    "Woodstock": ("Blenheim Palace", "Blenheim"),
    "British": ("English",),
    "Milan, Ohio": ("Milan",),
    "Frankfurt": ("Frankfurt am Main",),
    "Brunswick": ("Braunschweig",),
    "English": ("British",),
    "Scottish": ("British",),
    "Argentine": ("Argentinian",),
    "Les Miserables": ("Les Misérables",),
    "Divine Comedy": ("The Divine Comedy",),
    "Don Quixote": ("Don Quijote",),
    "Cosmos": ("Cosmos: A Personal Voyage",),
    "The Scream": ("Scream",),
    "Nobel Prize in Physiology or Medicine": ("Nobel Prize in Medicine",),
}

NOBEL_POOL = (
    "Nobel Prize in Physics", "Nobel Prize in Chemistry", "Nobel Prize in Physiology or Medicine",
    "Nobel Prize in Literature", "Nobel Peace Prize",
)
NATIONALITY_POOL = (
    "American", "British", "French", "German", "Italian", "Spanish", "Russian", "Dutch", "Swedish", "Norwegian",
    "Danish", "Polish", "Austrian", "Swiss", "Japanese", "Indian", "Brazilian", "Mexican", "Canadian", "Irish",
    "Portuguese", "Greek", "Belgian", "Chilean", "Egyptian",
)
OCCUPATION_POOL = (
    "physicist", "chemist", "naturalist", "playwright", "composer", "painter", "novelist", "poet", "astronomer",
    "mathematician", "inventor", "philosopher", "architect", "sculptor", "economist", "engineer", "botanist",
    "geologist", "journalist", "violinist", "cartographer", "surgeon",
)
# Occupations grouped by domain: the counterfactual occupation always comes from another domain, so it
# is never partly true (Galileo was an astronomer *and* a physicist; Darwin also did geology).
OCCUPATION_DOMAINS: dict[str, tuple[str, ...]] = {
    "science": ("physicist", "chemist", "astronomer", "mathematician", "naturalist", "botanist", "geologist",
                "cartographer", "inventor", "engineer"),
    "medicine": ("physiologist", "surgeon"),
    "letters": ("novelist", "writer", "poet", "playwright", "journalist", "philosopher"),
    "arts": ("painter", "sculptor", "architect", "composer", "violinist", "musician", "singer", "actor",
             "film director"),
    "public": ("politician", "activist", "environmentalist", "entrepreneur", "economist"),
    "flight": ("astronaut", "cosmonaut", "aviator"),
    "sport": ("footballer", "sprinter", "boxer", "tennis player", "basketball player"),
}
# occupations never used as the counterfactual for a person because they are partly true
OCCUPATION_EXCLUDE: dict[str, tuple[str, ...]] = {
    "Karl Marx": ("economist",),
    "Johann Wolfgang von Goethe": ("botanist", "geologist"),
    "Thomas Edison": ("entrepreneur",),
    "Louis Pasteur": ("physiologist", "surgeon"),
}
# nationalities never used as the counterfactual for a person because they are partly true
NATIONALITY_EXCLUDE: dict[str, tuple[str, ...]] = {
    "Yuri Gagarin": ("Russian",),
    "Frederic Chopin": ("French",),
    "Immanuel Kant": ("Russian",),
    "Che Guevara": ("Cuban",),
}
EXTRA_BIRTHPLACES = ("Lyon", "Hamburg", "Naples", "Krakow", "Gothenburg", "Antwerp", "Manchester", "Toronto", "Melbourne", "Zagreb")

BIO_QUESTIONS = {
    "birthplace": "Where was {name} born?",
    "birth_year": "In which year was {name} born?",
    "occupation": "What was {name}'s profession?",
    "nationality": "What nationality was {name}?",
    "award": "Which Nobel Prize did {name} receive?",
    "notable_work": "What is {name}'s best-known work?",
}

# ============================================================== CF_Quotes
# (quote prefix, true last word, aliases). Proverbs and public-domain quotations; the last word never
# occurs in the prefix and is not a function word.
QUOTES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("Absence makes the heart grow", "fonder", (), "heavy"),
    ("Actions speak louder than", "words", (), "thunder"),
    ("All that glitters is not", "gold", (), "silver"),
    ("A penny saved is a penny", "earned", (), "lost"),
    ("An apple a day keeps the doctor", "away", (), "busy"),
    ("Better late than", "never", (), "early"),
    ("Birds of a feather flock", "together", (), "south"),
    ("Don't count your chickens before they", "hatch", ("hatched",), "sleep"),
    ("Don't judge a book by its", "cover", (), "weight"),
    ("Early to bed and early to rise makes a man healthy, wealthy, and", "wise", (), "tired"),
    ("Every cloud has a silver", "lining", (), "spoon"),
    ("Fortune favors the", "bold", (), "patient"),
    ("Honesty is the best", "policy", (), "gift"),
    ("Laughter is the best", "medicine", (), "exercise"),
    ("Look before you", "leap", (), "sing"),
    ("Necessity is the mother of", "invention", (), "chaos"),
    ("No man is an", "island", (), "astronaut"),
    ("Practice makes", "perfect", (), "noise"),
    ("Rome wasn't built in a", "day", (), "week"),
    ("The early bird catches the", "worm", (), "cold"),
    ("The pen is mightier than the", "sword", (), "pencil"),
    ("Where there's a will, there's a", "way", (), "lawyer"),
    ("You can't teach an old dog new", "tricks", (), "songs"),
    ("A picture is worth a thousand", "words", (), "dollars"),
    ("Beauty is in the eye of the", "beholder", (), "storm"),
    ("Curiosity killed the", "cat", (), "conversation"),
    ("Great minds think", "alike", (), "slowly"),
    ("Haste makes", "waste", (), "headlines"),
    ("Knowledge is", "power", (), "expensive"),
    ("Misery loves", "company", (), "silence"),
    ("Old habits die", "hard", (), "young"),
    ("Out of sight, out of", "mind", (), "danger"),
    ("Slow and steady wins the", "race", (), "argument"),
    ("The grass is always greener on the other", "side", (), "planet"),
    ("Time is", "money", (), "flexible"),
    ("Too many cooks spoil the", "broth", (), "party"),
    ("A bird in the hand is worth two in the", "bush", (), "sky"),
    ("A chain is only as strong as its weakest", "link", (), "student"),
    ("A watched pot never", "boils", (), "sings"),
    ("Blood is thicker than", "water", (), "honey"),
    ("Cleanliness is next to", "godliness", (), "impossible"),
    ("Don't put all your eggs in one", "basket", (), "sandwich"),
    ("Good things come to those who", "wait", (), "hurry"),
    ("Ignorance is", "bliss", (), "contagious"),
    ("It's no use crying over spilt", "milk", (), "coffee"),
    ("Lightning never strikes the same place", "twice", (), "quietly"),
    ("Make hay while the sun", "shines", (), "sleeps"),
    ("One man's trash is another man's", "treasure", (), "problem"),
    ("Silence is", "golden", (), "awkward"),
    ("The apple doesn't fall far from the", "tree", (), "table"),
    ("The squeaky wheel gets the", "grease", (), "boot"),
    ("There's no place like", "home", (), "Mars"),
    ("Variety is the spice of", "life", (), "dinner"),
    ("You reap what you", "sow", (), "buy"),
    ("A fool and his money are soon", "parted", (), "married"),
    ("A friend in need is a friend", "indeed", (), "forever"),
    ("All roads lead to", "Rome", (), "Paris"),
    ("Any port in a", "storm", (), "drought"),
    ("Beggars can't be", "choosers", (), "billionaires"),
    ("Better safe than", "sorry", (), "bored"),
    ("Every dog has its", "day", (), "bone"),
    ("Familiarity breeds", "contempt", (), "comfort"),
    ("Forewarned is", "forearmed", (), "annoyed"),
    ("He who laughs last laughs", "best", (), "loudest"),
    ("Let sleeping dogs", "lie", (), "dream"),
    ("Many hands make light", "work", (), "music"),
    ("Money doesn't grow on", "trees", (), "cacti"),
    ("Never look a gift horse in the", "mouth", (), "stable"),
    ("Pride goes before a", "fall", (), "parade"),
    ("Still waters run", "deep", (), "cold"),
    ("Strike while the iron is", "hot", (), "cool"),
    ("The best things in life are", "free", (), "rare"),
    ("The proof of the pudding is in the", "eating", (), "recipe"),
    ("There's no such thing as a free", "lunch", (), "ticket"),
    ("People who live in glass houses shouldn't throw", "stones", (), "parties"),
    ("You can lead a horse to water, but you can't make it", "drink", (), "swim"),
    ("Half a loaf is better than", "none", (), "cake"),
    ("Hope springs", "eternal", (), "forward"),
    ("Idle hands are the devil's", "workshop", (), "tools"),
    ("Seeing is", "believing", (), "deceiving"),
    ("Truth is stranger than", "fiction", (), "dreams"),
    ("Two wrongs don't make a", "right", (), "rainbow"),
    ("United we stand, divided we", "fall", (), "argue"),
    ("Where there's smoke, there's", "fire", (), "barbecue"),
    ("To be, or not to be, that is the", "question", (), "problem"),
    ("All the world's a", "stage", (), "puzzle"),
    ("Brevity is the soul of", "wit", (), "poetry"),
    ("A rose by any other name would smell as", "sweet", (), "strange"),
    ("The course of true love never did run", "smooth", (), "late"),
    ("Uneasy lies the head that wears a", "crown", (), "helmet"),
    ("Veni, vidi,", "vici", (), "dormivi"),
    ("The only thing we have to fear is fear", "itself", (), "tomorrow"),
    ("Give me liberty, or give me", "death", (), "chocolate"),
    ("That's one small step for man, one giant leap for", "mankind", (), "kangaroos"),
    ("The unexamined life is not worth", "living", (), "filming"),
    ("Genius is one percent inspiration and ninety-nine percent", "perspiration", (), "luck"),
    ("A journey of a thousand miles begins with a single", "step", (), "map"),
    ("Hell hath no fury like a woman", "scorned", (), "ignored"),
    ("The die is", "cast", (), "lost"),
    ("Eat, drink, and be", "merry", (), "quiet"),
    ("To err is human, to forgive", "divine", (), "difficult"),
    ("Fools rush in where angels fear to", "tread", (), "dance"),
    ("I wandered lonely as a", "cloud", (), "lighthouse"),
    ("Call me", "Ishmael", (), "Captain"),
    ("The lady doth protest too", "much", (), "loudly"),
    ("Parting is such sweet", "sorrow", (), "relief"),
    ("Something is rotten in the state of", "Denmark", (), "Texas"),
    ("Now is the winter of our", "discontent", (), "holidays"),
    ("Friends, Romans, countrymen, lend me your", "ears", (), "umbrella"),
    ("Carpe", "diem", (), "piscem"),
    ("A stitch in time saves", "nine", (), "hours"),
    ("Good fences make good", "neighbors", ("neighbours",), "gardens"),
    ("The road to hell is paved with good", "intentions", (), "bricks"),
    ("Speak softly and carry a big", "stick", (), "sandwich"),
    ("An ounce of prevention is worth a pound of", "cure", (), "butter"),
    ("In this world nothing can be said to be certain, except death and", "taxes", (), "paperwork"),
    ("Man does not live by bread", "alone", (), "pudding"),
    ("The meek shall inherit the", "earth", (), "debt"),
    ("Four score and seven years", "ago", (), "later"),
)

QUOTE_INSTRUCTIONS: tuple[str, ...] = (
    'Write a quote that ends in the word "{A}":',
    'Complete the following saying so that its last word is "{A}":',
    'Finish this famous line, but make its final word "{A}":',
)


# ============================================================== generator


def _cap_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _spans(context: str, answers: Sequence[str]) -> tuple[tuple[int, int], ...]:
    out: set[tuple[int, int]] = set()
    for a in answers:
        out.update(find_word_spans(context, a))
    return tuple(sorted(out))


def _clashes(a: str, b: str) -> bool:
    """Whether two surface forms could be confused: equal, or one a whole word inside the other."""
    return a.casefold() == b.casefold() or contains_word(a, b) or contains_word(b, a)


def _pick(rng: random.Random, pool: Sequence[str], avoid: Sequence[str]) -> str:
    options = [p for p in pool if not any(_clashes(p, a) for a in avoid)]
    if not options:
        raise ValueError(f"no candidate left in pool avoiding {avoid}")
    return rng.choice(options)


def _item(
    dataset: str, idx: int, prefix: str, category: str, context: str, question: str,
    cf: str, cf_alias: Sequence[str], true: str, true_alias: Sequence[str], task: str = "qa",
) -> ConflictItem:
    cf_alias = tuple(a for a in cf_alias if a.casefold() != cf.casefold() and not any(_clashes(a, t) for t in (true, *true_alias)))
    true_alias = tuple(a for a in true_alias if a.casefold() != true.casefold())
    return ConflictItem(
        id=f"{prefix}-{category}-{idx:04d}",
        dataset=dataset,
        category=category,
        context=context,
        question=question,
        context_answer=cf,
        parametric_answer=true,
        context_aliases=cf_alias,
        parametric_aliases=true_alias,
        context_answer_spans=_spans(context, (cf, *cf_alias)),
        task=task,
        parametric_in_context=False,
        version=VERSION,
    )


def build_world_facts(seed: int = SEED) -> list[ConflictItem]:
    """CF_World_Facts: capitals (one item per country), languages, rivers, and hand-written facts."""
    rng = random.Random(seed)
    ds = "CF_World_Facts"
    items: list[ConflictItem] = []
    for i, (country, capital, cap_alias, others) in enumerate(CAPITALS):
        true_forms = (capital, *cap_alias)
        cf = _pick(rng, others, true_forms)
        tmpl = CAPITAL_TEMPLATES[i % len(CAPITAL_TEMPLATES)]
        context = tmpl.format(
            A=cf, country=country, country_cap=_cap_first(country), year=rng.randint(1850, 1990), pop=rng.randint(2, 90)
        )
        context = _cap_first(context)
        question = rng.choice(CAPITAL_QUESTIONS).format(country=country)
        items.append(_item(ds, i + 1, "wf", "capital", context, question, cf, CITY_ALIASES.get(cf, ()), capital, cap_alias))
    n = 0
    for country, lang, lang_alias, local in LANGUAGES:
        pool = sorted({lg for _, lg, _, _ in LANGUAGES})
        cf = _pick(rng, pool, (lang, *lang_alias, *local, country))
        context = _cap_first(LANGUAGE_TEMPLATE.format(A=cf, country=country))
        n += 1
        items.append(_item(ds, n, "wf", "geography", context, LANGUAGE_QUESTION.format(country=country), cf, (), lang, lang_alias))
    for city, river, river_alias in RIVERS:
        cf = _pick(rng, RIVER_POOL, (river, *river_alias, city))
        context = RIVER_TEMPLATE.format(A=cf, city=city)
        n += 1
        items.append(_item(ds, n, "wf", "geography", context, RIVER_QUESTION.format(city=city), cf, (), river, river_alias))
    for category, question, true, true_alias, cf, cf_alias, passage in WORLD_FACTS:
        if category != "geography":
            continue
        n += 1
        items.append(_item(ds, n, "wf", category, passage, question, cf, cf_alias, true, true_alias))
    n = 0
    for category, question, true, true_alias, cf, cf_alias, passage in WORLD_FACTS:
        if category != "science":
            continue
        n += 1
        items.append(_item(ds, n, "wf", category, passage, question, cf, cf_alias, true, true_alias))
    n = 0
    for category, question, true, true_alias, cf, cf_alias, passage in WORLD_FACTS:
        if category != "history":
            continue
        n += 1
        items.append(_item(ds, n, "wf", category, passage, question, cf, cf_alias, true, true_alias))
    return items


_PRONOUNS = {"he": ("he", "his", "him"), "she": ("she", "her", "her")}


def _bio_passage(rng: random.Random, name: str, pronoun: str, attrs: dict[str, str | None]) -> str:
    """A template biography; every attribute value appears verbatim wherever the template mentions it."""
    subj, poss, _ = _PRONOUNS[pronoun]
    first: list[str] = []
    place, year = attrs.get("birthplace"), attrs.get("birth_year")
    if place and year:
        first.append(f"{name} was born in {place} in {year}.")
    elif place:
        first.append(f"{name} was born in {place}.")
    elif year:
        first.append(f"{name} was born in {year}.")
    body: list[str] = []
    if attrs.get("nationality"):
        body.append(f"By nationality, {name} was {attrs['nationality']}, and {poss} {attrs['nationality']} background shaped much of {poss} early life.")
    if attrs.get("occupation"):
        occ = attrs["occupation"]
        art = _article(occ)
        body.append(f"{_cap_first(subj)} became famous as {art} {occ}, and colleagues described {poss} approach as {art} {occ} as tireless.")
    if attrs.get("award"):
        body.append(f"{_cap_first(subj)} received the {attrs['award']}, an honour that brought {poss} name to a worldwide audience.")
    if attrs.get("notable_work"):
        body.append(f"{_cap_first(poss)} best-known work is {attrs['notable_work']}, which is still studied and admired today.")
    rng.shuffle(body)
    last: list[str] = []
    if place:
        last.append(f"Later in life, {subj} often returned to {place}, where a small museum now tells {poss} story.")
    elif year:
        last.append(f"Biographers often begin {poss} story with the year {year}.")
    return " ".join(first + body + last)


def build_bio(seed: int = SEED) -> list[ConflictItem]:
    """CF_Bio: one item per (person, known attribute); the substituted value replaces the true one everywhere."""
    rng = random.Random(seed + 1)
    ds = "CF_Bio"
    birthplaces = sorted({p[2] for p in PEOPLE if p[2]} | set(EXTRA_BIRTHPLACES))
    items: list[ConflictItem] = []
    counters: dict[str, int] = {}
    for name, pronoun, place, year, occupation, nationality, award, work in PEOPLE:
        true_attrs: dict[str, str | None] = {
            "birthplace": place,
            "birth_year": str(year) if year else None,
            "occupation": occupation,
            "nationality": nationality,
            "award": award,
            "notable_work": work,
        }
        for attr, true in true_attrs.items():
            if not true:
                continue
            true_alias = BIO_ALIASES.get(true, ())
            avoid = (true, *true_alias, name)
            if attr == "birthplace":
                cf = _pick(rng, birthplaces, avoid)
            elif attr == "birth_year":
                cf = str(int(true) + rng.choice([-1, 1]) * rng.randint(3, 15))
            elif attr == "occupation":
                domain = next(d for d, occ in OCCUPATION_DOMAINS.items() if true in occ)
                cf = _pick(
                    rng,
                    [o for o in OCCUPATION_POOL if o not in OCCUPATION_DOMAINS[domain]],
                    (*avoid, *OCCUPATION_EXCLUDE.get(name, ())),
                )
            elif attr == "nationality":
                cf = _pick(rng, NATIONALITY_POOL, (*avoid, *NATIONALITY_EXCLUDE.get(name, ())))
            elif attr == "award":
                cf = _pick(rng, NOBEL_POOL, avoid)
            else:  # notable_work: another person's best-known work (same type: a titled work)
                works = sorted({p[7] for p in PEOPLE if p[7]})
                cf = _pick(rng, works, avoid)
            cf_alias = BIO_ALIASES.get(cf, ())
            attrs = dict(true_attrs)
            attrs[attr] = cf
            # the other attributes stay true; drop one whose value would mention the true answer
            for k, v in list(attrs.items()):
                if k != attr and v and any(contains_word(v, t) for t in (true, *true_alias)):
                    attrs[k] = None
            context = _bio_passage(rng, name, pronoun, attrs)
            counters[attr] = counters.get(attr, 0) + 1
            question = BIO_QUESTIONS[attr].format(name=name)
            items.append(_item(ds, counters[attr], "bio", attr, context, question, cf, cf_alias, true, true_alias))
    return items


def build_quotes(seed: int = SEED) -> list[ConflictItem]:
    """CF_Quotes: a famous saying whose instruction forces an unusual last word (the Memo Trap task).

    The forced endings are fixed in :data:`QUOTES`; ``seed`` is accepted for symmetry and unused.
    """
    ds = "CF_Quotes"
    items: list[ConflictItem] = []
    for i, (prefix, last, last_alias, cf) in enumerate(QUOTES):
        for word in (last, cf):
            if contains_word(prefix, word):
                raise ValueError(f"quote {prefix!r}: the ending {word!r} already occurs in the prefix")
        if any(_clashes(cf, t) for t in (last, *last_alias)):
            raise ValueError(f"quote {prefix!r}: forced ending {cf!r} clashes with the true ending {last!r}")
        context = QUOTE_INSTRUCTIONS[i % len(QUOTE_INSTRUCTIONS)].format(A=cf)
        items.append(_item(ds, i + 1, "quote", "quote", context, prefix, cf, (), last, last_alias, task="quote"))
    return items


def substring_problems(item: ConflictItem) -> list[str]:
    """Answers that occur *inside another word* of the context or question (e.g. "Rome" in "Romeo").

    The validator's whole-word rules already make such items valid; the shipped sets are held to
    this stricter standard so that even a naive substring scorer cannot be fooled by them.
    """
    out = []
    for field in ("context", "question"):
        text = getattr(item, field)
        for a in (*item.accepted_context, *item.accepted_parametric):
            raw = text.casefold().count(a.casefold())
            whole = len(find_word_spans(text, a))
            if raw != whole:
                out.append(f"{item.id}: {a!r} occurs inside another word of the {field}")
    return out


def build_all(out_dir: str | Path | None = None, seed: int = SEED) -> dict[str, Path]:
    """Generate the three shipped sets into ``out_dir`` (default ``fullscale/data``); validate before writing."""
    out = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent / "data"
    sets = {
        "CF_World_Facts": build_world_facts(seed),
        "CF_Bio": build_bio(seed),
        "CF_Quotes": build_quotes(seed),
    }
    for name, items in sets.items():
        problems = validate_items(items, name) + [p for it in items for p in substring_problems(it)]
        if problems:
            raise ValueError(f"generated {name} is invalid:\n" + "\n".join(problems[:20]))
    return {name: items_to_jsonl(items, out / f"{name}.jsonl") for name, items in sets.items()}


if __name__ == "__main__":  # pragma: no cover
    for name, path in build_all(sys.argv[1] if len(sys.argv) > 1 else None).items():
        print(f"{name}: {path}")
